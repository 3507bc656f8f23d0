<?php

declare(strict_types=1);

namespace Pimcore\Model\DataObject;

/** Stand-in for a generated DataObject class, Category (tests only). */
final class Category extends Concrete
{
}
