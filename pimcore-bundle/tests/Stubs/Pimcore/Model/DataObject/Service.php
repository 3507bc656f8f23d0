<?php

declare(strict_types=1);

namespace Pimcore\Model\DataObject;

use Pimcore\Db;
use Pimcore\Model\DataObject;
use Pimcore\Model\Element\Service as ElementService;

/**
 * Stand-in for Pimcore\Model\DataObject\Service (tests only): pathExists() (an exact, binary comparison:
 * `objects`.`path` and `key` are utf8_bin) and createFolderByPath() (each missing folder saved in turn;
 * two processes creating the same folder at once collide on the unique path, as in Pimcore).
 */
class Service extends ElementService
{
    public static function pathExists(string $path, ?string $type = null): bool
    {
        $path = ElementService::correctPath($path);
        if ($path === '/') {
            return true;
        }
        $slash = strrpos($path, '/');
        $parent = substr($path, 0, $slash + 1);
        $key = substr($path, $slash + 1);

        return Db::get()->fetchOne('SELECT id FROM objects WHERE `path` = ? AND `key` = ?', [$parent, $key]) !== false;
    }

    public static function createFolderByPath(string $path, array $options = []): Folder
    {
        $path = ElementService::correctPath($path);
        $parent = DataObject::getById(1) ?? throw new \LogicException('no root object (id 1)');
        foreach (array_values(array_filter(explode('/', $path), static fn (string $p): bool => $p !== '')) as $part) {
            $here = rtrim((string) $parent->getFullPath(), '/') . '/' . $part;
            $found = DataObject::getByPath($here);
            if ($found === null) {
                $found = new Folder();
                $found->setKey(ElementService::getValidKey($part, 'object'));
                $found->setParent($parent);
                $found->save();
            }
            $parent = $found;
        }
        if (!$parent instanceof Folder) {
            throw new \Exception("{$path} exists and is not a folder");
        }

        return $parent;
    }
}
