<?php

declare(strict_types=1);

namespace Pimcore\Model;

/** Stand-in for Pimcore\Model\AbstractModel (tests only): the model factory that honours class overrides. */
abstract class AbstractModel
{
    public static function getModelFactory(): Factory
    {
        return Factory::instance();
    }
}
