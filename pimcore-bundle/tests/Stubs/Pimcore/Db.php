<?php

declare(strict_types=1);

namespace Pimcore;

use Doctrine\DBAL\Connection;

/**
 * Stand-in for Pimcore\Db (lib/Db.php at v11.4.1; tests only): the one DBAL connection of the kernel,
 * `doctrine.dbal.default_connection`. Every model's Dao uses it (lib/Model/Dao/AbstractDao.php:32-50:
 * beginTransaction, commit and rollBack go straight to it), and so does the bundle: a Pimcore save inside
 * a transaction the bundle opened is a NESTED transaction of the same connection.
 */
class Db
{
    public static function getConnection(): Connection
    {
        return self::get();
    }

    public static function reset(): Connection
    {
        self::close();

        return self::get();
    }

    public static function get(): Connection
    {
        $container = \Pimcore::getContainer() ?? throw new \LogicException('the Pimcore stand-in is not booted (StandIn::boot())');
        /** @var Connection $db */
        $db = $container->get('doctrine.dbal.default_connection');

        return $db;
    }

    public static function close(): void
    {
        self::get()->close();
    }
}
