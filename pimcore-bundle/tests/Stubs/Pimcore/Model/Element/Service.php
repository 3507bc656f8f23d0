<?php

declare(strict_types=1);

namespace Pimcore\Model\Element;

/**
 * Stand-in for Pimcore\Model\Element\Service (models/Element/Service.php at v11.4.1; tests only).
 *
 * getValidKey() (Service.php:935-967) follows Pimcore's rules (written from reading them, not copied):
 * trim; drop control/format/private/unassigned characters (\p{C}); every 4-byte character (U+10000 and
 * above: emoji and the like) becomes `-`, because the objects table's `key` column is 3-byte utf8
 * (install.sql:272); `/` becomes `-`; for objects `<` and `>` become `-`; then cut to 255 characters and
 * trim again. So `A/1`, `A<1` and `A😀1` are all the key `A-1`. Pimcore also fires
 * SERVICE_PRE_GET_VALID_KEY first; no listener is registered here.
 */
class Service
{
    public static function getValidKey(string $key, string $type): string
    {
        $key = trim($key);
        $key = (string) preg_replace(['/\p{C}/u', '/[\x{10000}-\x{10FFFF}]/u'], ['', '-'], $key);
        $key = str_replace('/', '-', $key);
        if ($type === 'object') {
            $key = (string) preg_replace('/[<>]/', '-', $key);
        } elseif ($type === 'document') {
            $key = (string) preg_replace('/[#?*:\\\\<>|"%&@=;+]/', '-', $key);
        } elseif ($type === 'asset') {
            $key = (string) preg_replace('/[#?*:\\\\<>|"%+]/', '-', trim($key, '. '));
        } else {
            $key = ltrim($key, '. ');
        }

        return trim(mb_substr($key, 0, 255));
    }

    public static function isValidKey(string $key, string $type): bool
    {
        return self::getValidKey($key, $type) == $key;
    }

    /** `//` collapsed, no trailing slash (but `/` stays `/`). */
    public static function correctPath(string $path): string
    {
        $path = (string) preg_replace('@/+@', '/', '/' . $path);

        return $path === '/' ? $path : rtrim($path, '/');
    }
}
