<?php

declare(strict_types=1);

use Symfony\Component\DependencyInjection\Container;
use Symfony\Component\EventDispatcher\EventDispatcher;
use Symfony\Contracts\EventDispatcher\EventDispatcherInterface;

/**
 * Stand-in for Pimcore's global `\Pimcore` class (lib/Pimcore.php at v11.4.1; tests only): the kernel's
 * container and event dispatcher, the two things the models below reach for. The container holds the
 * DBAL connection as `doctrine.dbal.default_connection` (what Pimcore\Db::get() returns, lib/Db.php:36)
 * and the project directory whose var/versions receives version files. Set up by
 * Pimingestd\PimcoreBundle\Tests\Stubs\StandIn::boot().
 */
class Pimcore
{
    private static ?Container $container = null;
    private static ?EventDispatcherInterface $dispatcher = null;

    public static function getContainer(): ?Container
    {
        return self::$container;
    }

    /** @internal the stand-in's kernel boot (Pimcore sets its container from the kernel) */
    public static function setContainer(?Container $container): void
    {
        self::$container = $container;
    }

    public static function getEventDispatcher(): EventDispatcherInterface
    {
        return self::$dispatcher ??= new EventDispatcher();
    }

    /** @internal the stand-in's kernel boot: a fresh dispatcher, without the previous test's listeners */
    public static function setEventDispatcher(?EventDispatcherInterface $dispatcher): void
    {
        self::$dispatcher = $dispatcher;
    }
}
