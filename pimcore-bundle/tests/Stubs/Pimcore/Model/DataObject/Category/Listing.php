<?php

declare(strict_types=1);

namespace Pimcore\Model\DataObject\Category;

/** Stand-in for Category\Listing (tests only). */
final class Listing extends \Pimcore\Model\DataObject\StubListing
{
    protected function of(): string
    {
        return \Pimcore\Model\DataObject\Category::class;
    }
}
