<?php

declare(strict_types=1);

namespace Pimcore\Model\DataObject\Product;

use Pimcore\Model\DataObject;

/**
 * Stand-in for the generated Product\Listing (tests only).
 *
 * @method DataObject\Product[] load()
 * @method DataObject\Product|false current()
 */
class Listing extends DataObject\Listing\Concrete
{
    protected string $classId = 'prod';
    protected string $className = 'Product';
}
