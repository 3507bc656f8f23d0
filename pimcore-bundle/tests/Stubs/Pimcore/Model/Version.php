<?php

declare(strict_types=1);

namespace Pimcore\Model;

/** Stand-in for Pimcore 11's Pimcore\Model\Version (tests only): records whether versioning is on. */
final class Version
{
    public static bool $enabled = true;

    public static function disable(): void
    {
        self::$enabled = false;
    }

    public static function enable(): void
    {
        self::$enabled = true;
    }
}
