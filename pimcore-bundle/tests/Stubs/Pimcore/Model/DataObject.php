<?php

declare(strict_types=1);

namespace Pimcore\Model;

/** Stand-in for Pimcore\Model\DataObject (tests only): the generic entry point, DataObject::getById() and friends. */
class DataObject extends DataObject\AbstractObject
{
}
