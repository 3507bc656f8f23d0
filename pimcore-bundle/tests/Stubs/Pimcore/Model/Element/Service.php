<?php

declare(strict_types=1);

namespace Pimcore\Model\Element;

/** Stand-in for Pimcore 11's Element\Service (tests only): the one static the applier calls. */
class Service
{
    public static function getValidKey(string $key, string $type): string
    {
        return trim(preg_replace('/[\/\x00-\x1f]+/', '-', $key) ?? $key);
    }
}
