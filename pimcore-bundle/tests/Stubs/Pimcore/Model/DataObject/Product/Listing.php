<?php

declare(strict_types=1);

namespace Pimcore\Model\DataObject\Product;

/** Stand-in for Product\Listing (tests only). */
final class Listing extends \Pimcore\Model\DataObject\StubListing
{
    protected function of(): string
    {
        return \Pimcore\Model\DataObject\Product::class;
    }
}
