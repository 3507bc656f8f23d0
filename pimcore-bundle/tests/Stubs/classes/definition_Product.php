<?php

declare(strict_types=1);

// The stand-in's Product class, as Pimcore keeps a class in var/classes/definition_Product.php: a shop's
// typical product, with a field of every type the data_object applier maps. Tables and the generated class
// (Pimcore\Model\DataObject\Product) follow it.

use Pimcore\Model\DataObject\ClassDefinition;
use Pimcore\Model\DataObject\ClassDefinition\Data;

return ClassDefinition::make('prod', 'Product', [
    Data\Input::named('sku'),
    Data\Input::sized('ean', 13),
    Data\Input::unique('gtin', 14),
    Data\Localizedfields::of([Data\Input::named('name'), Data\Input::sized('description', 255)]),
    Data\Numeric::named('price'),
    Data\Numeric::decimal('weight', 10, 3),
    Data\Numeric::integer('stock'),
    Data\Checkbox::named('active'),
    Data\Date::named('released'),
    Data\Select::named('color'),
    Data\Multiselect::named('sizes'),
    Data\ManyToOneRelation::to('category', 'Category'),
    Data\ManyToManyObjectRelation::to('related', 'Product'),
], allowVariants: true);
