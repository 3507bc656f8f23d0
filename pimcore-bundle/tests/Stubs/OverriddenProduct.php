<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Tests\Stubs;

use Pimcore\Model\DataObject\Product;

/** A project's override of the generated Product class (`pimcore.models.class_overrides`), for the factory's test. */
final class OverriddenProduct extends Product
{
}
