<?php

declare(strict_types=1);

namespace Pimcore;

/**
 * Stand-in for Pimcore\Logger (lib/Logger.php at v11.4.1; tests only). Pimcore's forwards to Monolog;
 * this one keeps what was logged in `$records` so that tests can read, for example, the deadlock retry
 * loop's "Unable to finish transaction" warnings.
 */
class Logger
{
    /** @var list<array{level: string, message: string}> */
    public static array $records = [];

    public static function emergency(string $message, array $context = []): void
    {
        self::log('emergency', $message);
    }

    public static function alert(string $message, array $context = []): void
    {
        self::log('alert', $message);
    }

    public static function critical(string $message, array $context = []): void
    {
        self::log('critical', $message);
    }

    public static function crit(string $message, array $context = []): void
    {
        self::log('critical', $message);
    }

    public static function error(string $message, array $context = []): void
    {
        self::log('error', $message);
    }

    public static function warning(string $message, array $context = []): void
    {
        self::log('warning', $message);
    }

    public static function warn(string $message, array $context = []): void
    {
        self::log('warning', $message);
    }

    public static function notice(string $message, array $context = []): void
    {
        self::log('notice', $message);
    }

    public static function info(string $message, array $context = []): void
    {
        self::log('info', $message);
    }

    public static function debug(string $message, array $context = []): void
    {
        self::log('debug', $message);
    }

    public static function log(string $level, string $message, array $context = []): void
    {
        self::$records[] = ['level' => $level, 'message' => $message];
    }

    /** @return list<string> the messages logged at `$level` */
    public static function messages(string $level): array
    {
        return array_values(array_map(
            static fn (array $r): string => $r['message'],
            array_filter(self::$records, static fn (array $r): bool => $r['level'] === $level),
        ));
    }
}
