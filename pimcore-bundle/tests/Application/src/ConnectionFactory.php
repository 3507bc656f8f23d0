<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Tests\Application\src;

use Doctrine\DBAL\Connection;
use Doctrine\DBAL\DriverManager;
use Doctrine\DBAL\Tools\DsnParser;

/** The app's DBAL connection from DATABASE_URL (sqlite:///path or mysql://user:pw@host:port/db). */
final class ConnectionFactory
{
    public static function create(string $url): Connection
    {
        $params = (new DsnParser(['sqlite' => 'pdo_sqlite', 'sqlite3' => 'pdo_sqlite', 'mysql' => 'pdo_mysql', 'mariadb' => 'pdo_mysql']))->parse($url);
        if (($params['driver'] ?? '') === 'pdo_sqlite') {
            $params['driverOptions'] = [\PDO::ATTR_TIMEOUT => 10];
        } else {
            $params['charset'] ??= 'utf8mb4';  // as Pimcore configures its connection; the server default may be latin1
        }
        $db = DriverManager::getConnection($params);
        if (($params['driver'] ?? '') === 'pdo_mysql' && !\Doctrine\DBAL\Types\Type::hasType('enum')) {
            // As a Pimcore 11 project maps them (doctrine.dbal mapping_types): Pimcore's own tables (`objects`)
            // hold enum columns, which schema introspection (the migrations, setup) must read. DBAL 4.2 and later
            // know the enum type themselves.
            $db->getDatabasePlatform()->registerDoctrineTypeMapping('enum', 'string');
        }
        if (($params['driver'] ?? '') === 'pdo_sqlite') {
            $db->executeStatement('PRAGMA journal_mode = WAL');
            $db->executeStatement('PRAGMA busy_timeout = 10000');
        }

        return $db;
    }
}
