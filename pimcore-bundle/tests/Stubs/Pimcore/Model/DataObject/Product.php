<?php

declare(strict_types=1);

namespace Pimcore\Model\DataObject;

/** Stand-in for a generated DataObject class, Product (tests only). */
final class Product extends Concrete
{
}
