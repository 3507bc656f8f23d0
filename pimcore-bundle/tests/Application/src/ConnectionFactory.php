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
        if (($params['driver'] ?? '') !== 'pdo_sqlite') {
            // As a Pimcore 11 project configures DoctrineBundle (`mapping_types: {enum: string, bit: boolean}`):
            // Pimcore's tables have ENUM columns, which DBAL 3 cannot introspect otherwise (migrations do).
            // DBAL 4 maps ENUM itself, to its own enum type, and is left alone.
            $platform = $db->getDatabasePlatform();
            foreach (['enum' => 'string', 'bit' => 'boolean'] as $dbType => $type) {
                if (!$platform->hasDoctrineTypeMappingFor($dbType)) {
                    $platform->registerDoctrineTypeMapping($dbType, $type);
                }
            }
        }
        if (($params['driver'] ?? '') === 'pdo_sqlite') {
            $db->executeStatement('PRAGMA journal_mode = WAL');
            $db->executeStatement('PRAGMA busy_timeout = 10000');
        }

        return $db;
    }
}
