<?php

declare(strict_types=1);

namespace Pimcore;

/**
 * Stand-in for Pimcore\Cache (lib/Cache.php at v11.4.1; tests only), reduced to what a save does to the
 * database. Pimcore's default pool is Symfony's DoctrineDbalAdapter on the default connection
 * (bundles/CoreBundle/config/cache.yaml:19) behind a TagAwareAdapter. Every object save and delete
 * clears the tags object_<id>, object_properties and output (AbstractObject.php:708-731), and
 * CoreCacheHandler::clearTags() first takes its write lock, then writes each tag's new version: upserts
 * of rows in `cache_items` on Db::get(). Inside a transaction someone else opened, those row locks are
 * held until that transaction ends, so every other save waits on the `object_properties` row.
 *
 * No object is ever served from this cache (load() misses): getById() loads from the tables.
 */
class Cache
{
    public static function load(string $key): mixed
    {
        return false;
    }

    public static function save(mixed $data, string $key, array $tags = [], ?int $lifetime = null, int $priority = 0, bool $force = false): bool
    {
        return true;
    }

    /** @param list<string> $tags */
    public static function clearTags(array $tags): bool
    {
        $db = Db::get();
        $upsert = 'INSERT INTO cache_items (item_id, item_data, item_lifetime, item_time) VALUES (?, ?, NULL, ?)'
            . ' ON DUPLICATE KEY UPDATE item_data = VALUES(item_data), item_time = VALUES(item_time)';
        $db->executeStatement($upsert, ['pimcore_system_cache_write_lock', (string) time(), time()]);
        foreach (array_unique($tags) as $tag) {
            $db->executeStatement($upsert, ["pimcore\0tags\0{$tag}", bin2hex(random_bytes(8)), time()]);
        }

        return true;
    }

    public static function clearTag(string $tag): bool
    {
        return self::clearTags([$tag]);
    }
}
