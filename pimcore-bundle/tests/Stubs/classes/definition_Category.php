<?php

declare(strict_types=1);

// The stand-in's Category class (see definition_Product.php).

use Pimcore\Model\DataObject\ClassDefinition;
use Pimcore\Model\DataObject\ClassDefinition\Data;

return ClassDefinition::make('cat', 'Category', [
    Data\Input::named('code'),
    Data\Input::named('title'),
]);
