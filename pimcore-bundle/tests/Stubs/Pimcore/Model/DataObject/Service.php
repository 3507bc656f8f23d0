<?php

declare(strict_types=1);

namespace Pimcore\Model\DataObject;

/** Stand-in for Pimcore 11's DataObject\Service (tests only). */
class Service extends \Pimcore\Model\Element\Service
{
    /** @var array<string, Folder> */
    public static array $folders = [];

    public static function createFolderByPath(string $path, array $options = []): Folder
    {
        return self::$folders[$path] ??= new Folder($path);
    }
}
