<?php

declare(strict_types=1);

namespace Pimcore\Model\DataObject;

use Pimcore\Cache\RuntimeCache;
use Pimcore\Model\DataObject\ClassDefinition\Data;
use Pimcore\Model\DataObject\ClassDefinition\Data\Localizedfields;

/**
 * Stand-in for Pimcore\Model\DataObject\ClassDefinition (tests only): what an applier can inspect at boot.
 * Like Pimcore's var/classes/definition_<Name>.php, each class's definition is a PHP file returning the
 * object, here tests/Stubs/classes/definition_<Name>.php; loaded definitions are kept in the RuntimeCache
 * (as Pimcore does, key `class_<id>`), so a test may change one (setMandatory()) until the next boot.
 *
 * getFieldDefinitions() lists the top-level fields; a localized field is found under `localizedfields`
 * (getFieldDefinition('localizedfields')->getFieldDefinition('name')), not at the top level.
 */
class ClassDefinition
{
    public string $id = '';
    public string $name = '';
    public string $parentClass = '';
    public bool $allowInherit = false;
    public bool $allowVariants = false;
    /** @var array<string, Data> */
    protected array $fieldDefinitions = [];

    /** @param list<Data> $fields */
    public static function make(string $id, string $name, array $fields, bool $allowVariants = false): self
    {
        $class = new self();
        $class->id = $id;
        $class->name = $name;
        $class->allowVariants = $allowVariants;
        foreach ($fields as $field) {
            $class->fieldDefinitions[$field->getName()] = $field;
        }

        return $class;
    }

    public static function getById(string $id, bool $force = false): ?self
    {
        foreach (self::files() as $name) {
            $class = self::getByName($name);
            if ($class !== null && $class->getId() === $id) {
                return $class;
            }
        }

        return null;
    }

    public static function getByName(string $name): ?self
    {
        $cacheKey = 'class_name_' . $name;
        if (RuntimeCache::isRegistered($cacheKey) && RuntimeCache::get($cacheKey) instanceof self) {
            return RuntimeCache::get($cacheKey);
        }
        $file = self::directory() . "/definition_{$name}.php";
        if (!is_file($file)) {
            return null;
        }
        $class = require $file;
        RuntimeCache::set($cacheKey, $class);

        return $class;
    }

    /** @internal the class names whose definitions exist (the stand-in's installer creates their tables) */
    public static function files(): array
    {
        $names = [];
        foreach (glob(self::directory() . '/definition_*.php') ?: [] as $file) {
            $names[] = substr(basename($file, '.php'), \strlen('definition_'));
        }
        sort($names);

        return $names;
    }

    private static function directory(): string
    {
        return \dirname(__DIR__, 3) . '/classes';
    }

    public function getId(): string
    {
        return $this->id;
    }

    public function getName(): string
    {
        return $this->name;
    }

    public function getAllowInherit(): bool
    {
        return $this->allowInherit;
    }

    public function getAllowVariants(): bool
    {
        return $this->allowVariants;
    }

    /** @return array<string, Data> */
    public function getFieldDefinitions(array $context = []): array
    {
        return $this->fieldDefinitions;
    }

    public function getFieldDefinition(string $key, array $context = []): ?Data
    {
        return $this->fieldDefinitions[$key] ?? null;
    }

    /** @internal the localized fields, or none */
    public function localized(): ?Localizedfields
    {
        $fd = $this->fieldDefinitions['localizedfields'] ?? null;

        return $fd instanceof Localizedfields ? $fd : null;
    }
}
