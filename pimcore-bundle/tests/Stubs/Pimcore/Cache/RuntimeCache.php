<?php

declare(strict_types=1);

namespace Pimcore\Cache;

/**
 * Stand-in for Pimcore\Cache\RuntimeCache (lib/Cache/RuntimeCache.php at v11.4.1; tests only): the
 * process-wide registry of loaded elements. AbstractObject::getById() returns the registered instance
 * (AbstractObject.php:198-203), save() registers the instance it saved (AbstractObject.php:705) even when
 * the save later fails, and nothing removes a refused instance: a later getById() or listing returns that
 * same in-memory object, with the refused values still set.
 */
class RuntimeCache extends \ArrayObject
{
    private static ?self $instance = null;
    private static bool $disabled = false;

    public static function getInstance(): self
    {
        return self::$instance ??= new self();
    }

    public static function disable(): void
    {
        self::$disabled = true;
    }

    public static function enable(): void
    {
        self::$disabled = false;
    }

    public static function isEnabled(): bool
    {
        return !self::$disabled;
    }

    public static function get(string $index): mixed
    {
        $instance = self::getInstance();
        if (!$instance->offsetExists($index)) {
            throw new \Exception("No entry is registered for key '{$index}'");
        }

        return $instance->offsetGet($index);
    }

    public static function set(string $index, mixed $value): void
    {
        if (self::$disabled) {
            return;
        }
        self::getInstance()->offsetSet($index, $value);
    }

    public static function isRegistered(string $index): bool
    {
        return self::$instance !== null && self::$instance->offsetExists($index);
    }

    public static function save(mixed $data, string $id): void
    {
        self::set($id, $data);
    }

    public static function load(string $id): mixed
    {
        return self::get($id);
    }

    /** @param list<string> $keepItems */
    public static function clear(array $keepItems = []): void
    {
        $kept = [];
        foreach ($keepItems as $key) {
            if (self::isRegistered($key)) {
                $kept[$key] = self::get($key);
            }
        }
        self::$instance = new self($kept);
    }
}
