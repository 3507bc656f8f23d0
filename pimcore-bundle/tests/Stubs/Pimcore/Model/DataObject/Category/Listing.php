<?php

declare(strict_types=1);

namespace Pimcore\Model\DataObject\Category;

use Pimcore\Model\DataObject;

/**
 * Stand-in for the generated Category\Listing (tests only).
 *
 * @method DataObject\Category[] load()
 * @method DataObject\Category|false current()
 */
class Listing extends DataObject\Listing\Concrete
{
    protected string $classId = 'cat';
    protected string $className = 'Category';
}
