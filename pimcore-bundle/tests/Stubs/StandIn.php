<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Tests\Stubs;

use Doctrine\DBAL\Connection;
use Pimcore\Cache\RuntimeCache;
use Pimcore\Logger;
use Pimcore\Model\DataObject\AbstractObject;
use Pimcore\Model\DataObject\ClassDefinition;
use Pimcore\Model\DataObject\ClassDefinition\Data\Localizedfields;
use Pimcore\Model\DataObject\Localizedfield;
use Pimcore\Model\Factory;
use Pimcore\Model\Version;
use Symfony\Component\DependencyInjection\Container;

/**
 * Boots the Pimcore stand-ins (tests/Stubs/Pimcore) on a real MariaDB connection: the kernel's container
 * (the connection as `doctrine.dbal.default_connection`, the project directory), a fresh event
 * dispatcher, an empty RuntimeCache and log, versioning on, and Pimcore's tables:
 *
 * - `objects` as bundles/InstallBundle/dump/install.sql:268-294 has it (`key` and `path` 3-byte utf8,
 *   utf8_bin; UNIQUE (`path`, `key`)), with the root folder, id 1;
 * - `versions`, and `cache_items` as Symfony's DoctrineDbalAdapter creates it;
 * - per class: `object_store_<id>`, `object_localized_data_<id>` and the view `object_<id>`, with the
 *   charset utf8mb4 and the collation of the Pimcore being modelled (Pimcore creates them with
 *   `DEFAULT CHARSET=utf8mb4`, models/DataObject/ClassDefinition/Dao.php:120-151, so they take the
 *   database's collation: utf8mb4_general_ci as Pimcore 11's setup guide has it, utf8mb4_unicode_520_ci
 *   on Pimcore 12).
 */
final class StandIn
{
    public const PIMCORE_11 = 'utf8mb4_general_ci';
    public const PIMCORE_12 = 'utf8mb4_unicode_520_ci';

    /**
     * A connection as Pimcore configures its default one: utf8mb4, and `SET sql_mode = ''` on every
     * connect (bundles/CoreBundle/config/pimcore/default.yaml:148), so MariaDB truncates an over-long
     * value and turns what a column cannot hold into `?`, silently, where strict mode would refuse.
     */
    public static function connect(string $url): Connection
    {
        $params = (new \Doctrine\DBAL\Tools\DsnParser(['mysql' => 'pdo_mysql', 'mariadb' => 'pdo_mysql']))->parse($url);
        $params['charset'] ??= 'utf8mb4';
        // PHP 8.4 names the attribute Pdo\Mysql::ATTR_INIT_COMMAND (PDO::MYSQL_* is deprecated from 8.5).
        $init = class_exists(\Pdo\Mysql::class) ? \Pdo\Mysql::ATTR_INIT_COMMAND : \PDO::MYSQL_ATTR_INIT_COMMAND;
        $params['driverOptions'] = [$init => "SET sql_mode = ''"];

        return \Doctrine\DBAL\DriverManager::getConnection($params);
    }

    /**
     * The collation of the Pimcore this platform's DBAL belongs to: Pimcore 11 requires DBAL 3, Pimcore 12 and
     * 2026 require DBAL 4 (bookworm runs the first, trixie and sid the second).
     */
    public static function pimcoreCollation(): string
    {
        return self::dbalMajor() === 3 ? self::PIMCORE_11 : self::PIMCORE_12;
    }

    /**
     * For a test: attach() and install(), and every object but the root removed, with the versions and the
     * cache rows: each test starts from an empty Pimcore.
     */
    public static function boot(Connection $db, string $projectDir, ?string $collation = null): void
    {
        self::attach($db, $projectDir);
        if (!self::install($db, $collation)) {
            $db->executeStatement('DELETE FROM objects WHERE id > 1');  // the class's rows go by their foreign keys
            $db->executeStatement('DELETE FROM versions');
            $db->executeStatement('DELETE FROM cache_items');
        }
    }

    /**
     * `$db` becomes Pimcore's default connection (its sql_mode set as Pimcore sets it, see connect()), with
     * a fresh event dispatcher, RuntimeCache and log, versioning on and no class overrides; the tables are
     * left as they are (a long-running process, such as the test application's worker, attaches once).
     */
    public static function attach(Connection $db, string $projectDir): void
    {
        if (!$db->getDatabasePlatform() instanceof \Doctrine\DBAL\Platforms\AbstractMySQLPlatform) {
            throw new \LogicException('the Pimcore stand-ins run on MariaDB (Pimcore does)');
        }
        $db->executeStatement("SET SESSION sql_mode = ''");
        $container = new Container();
        $container->set('doctrine.dbal.default_connection', $db);
        $container->setParameter('kernel.project_dir', $projectDir);
        \Pimcore::setContainer($container);
        \Pimcore::setEventDispatcher(null);
        RuntimeCache::clear();
        Logger::$records = [];
        Version::enable();
        AbstractObject::setHideUnpublished(false);
        Factory::configure([]);
        Localizedfield::$defaultLanguage = 'en';
    }

    public static function shutdown(): void
    {
        \Pimcore::setContainer(null);
        \Pimcore::setEventDispatcher(null);
        RuntimeCache::clear();
    }

    /**
     * Pimcore's tables, created unless they are there already as the class definitions and `$collation`
     * (by default the platform's) make them, which leaves them and their rows alone. True if it created them.
     */
    public static function install(Connection $db, ?string $collation = null): bool
    {
        $collation ??= self::pimcoreCollation();
        $classes = array_map(static fn (string $name): ClassDefinition => ClassDefinition::getByName($name) ?? throw new \LogicException($name), ClassDefinition::files());
        // Creating the tables costs more than the rest of a test: they are created again only when this
        // definition of them or this collation differs from the one they were made with.
        $fingerprint = hash('sha256', $collation . serialize(array_map(static fn (ClassDefinition $c): array => [$c->getId(), array_map(static fn ($fd): array => [$fd->getName(), $fd->getColumns(), $fd->getUnique(), $fd instanceof Localizedfields ? array_map(static fn ($f): array => $f->getColumns(), $fd->getFieldDefinitions()) : null], $c->getFieldDefinitions())], $classes)) . filemtime(__FILE__));
        $db->executeStatement('CREATE TABLE IF NOT EXISTS stub_schema (fingerprint char(64) NOT NULL)');
        if ($db->fetchOne('SELECT fingerprint FROM stub_schema') === $fingerprint) {
            return false;
        }
        $db->executeStatement('DELETE FROM stub_schema');
        foreach ($classes as $class) {
            $db->executeStatement("DROP VIEW IF EXISTS `object_{$class->getId()}`");
            $db->executeStatement("DROP TABLE IF EXISTS `object_localized_data_{$class->getId()}`, `object_store_{$class->getId()}`");
        }
        $db->executeStatement('DROP TABLE IF EXISTS versions, cache_items, objects');
        $db->executeStatement(<<<'SQL'
            CREATE TABLE objects (
              `id` int(11) unsigned NOT NULL AUTO_INCREMENT,
              `parentId` int(11) unsigned DEFAULT NULL,
              `type` enum('object','folder','variant') DEFAULT NULL,
              `key` varchar(255) CHARACTER SET utf8 COLLATE utf8_bin default '',
              `path` varchar(765) CHARACTER SET utf8 COLLATE utf8_bin DEFAULT NULL,
              `index` int(11) unsigned DEFAULT '0',
              `published` tinyint(1) unsigned DEFAULT '1',
              `creationDate` int(11) unsigned DEFAULT NULL,
              `modificationDate` int(11) unsigned DEFAULT NULL,
              `classId` VARCHAR(50) NULL DEFAULT NULL,
              `className` varchar(255) DEFAULT NULL,
              `versionCount` INT UNSIGNED NOT NULL DEFAULT '0',
              PRIMARY KEY (`id`),
              UNIQUE KEY `fullpath` (`path`,`key`),
              KEY `key` (`key`),
              KEY `parentId` (`parentId`),
              KEY `type_path_classId` (`type`, `path`, `classId`)
            ) AUTO_INCREMENT=2 DEFAULT CHARSET=utf8mb4 ROW_FORMAT=DYNAMIC
            SQL);
        $db->executeStatement("INSERT INTO objects (id, parentId, `type`, `key`, `path`, published, creationDate, modificationDate) VALUES (1, 0, 'folder', '', '/', 1, UNIX_TIMESTAMP(), UNIX_TIMESTAMP())");
        $db->executeStatement(<<<'SQL'
            CREATE TABLE versions (
              `id` int(11) unsigned NOT NULL AUTO_INCREMENT,
              `cid` int(11) unsigned DEFAULT NULL,
              `ctype` enum('document','asset','object') DEFAULT NULL,
              `date` int(11) unsigned DEFAULT NULL,
              `note` text,
              `versionCount` INT UNSIGNED NOT NULL DEFAULT '0',
              `serialized` tinyint(1) unsigned DEFAULT '0',
              PRIMARY KEY (`id`),
              KEY `cid` (`cid`)
            ) DEFAULT CHARSET=utf8mb4
            SQL);
        $db->executeStatement(<<<'SQL'
            CREATE TABLE cache_items (
              `item_id` VARBINARY(255) NOT NULL PRIMARY KEY,
              `item_data` MEDIUMBLOB NOT NULL,
              `item_lifetime` INT UNSIGNED,
              `item_time` INT UNSIGNED NOT NULL
            ) COLLATE utf8mb4_bin ENGINE = InnoDB
            SQL);
        $charset = "DEFAULT CHARSET=utf8mb4 COLLATE={$collation}";
        foreach ($classes as $class) {
            $id = $class->getId();
            $columns = [];
            foreach ($class->getFieldDefinitions() as $fd) {
                if ($fd instanceof Localizedfields) {
                    $localized = [];
                    foreach ($fd->getFieldDefinitions() as $child) {
                        foreach ($child->getColumns() as $name => $type) {
                            $localized[] = "`{$name}` {$type} DEFAULT NULL";
                        }
                    }
                    $db->executeStatement("CREATE TABLE `object_localized_data_{$id}` (`ooo_id` int(11) unsigned NOT NULL, `language` varchar(10) NOT NULL, "
                        . implode(', ', $localized) . ", PRIMARY KEY (`ooo_id`, `language`), FOREIGN KEY (`ooo_id`) REFERENCES objects (`id`) ON DELETE CASCADE) {$charset}");
                } else {
                    foreach ($fd->getColumns() as $name => $type) {
                        $columns[] = "`{$name}` {$type} DEFAULT NULL";
                        if ($fd->getUnique()) {
                            $columns[] = "UNIQUE KEY `u_index_{$name}` (`{$name}`)";
                        }
                    }
                }
            }
            $db->executeStatement("CREATE TABLE `object_store_{$id}` (`oo_id` int(11) unsigned NOT NULL, " . implode(', ', $columns)
                . ", PRIMARY KEY (`oo_id`), FOREIGN KEY (`oo_id`) REFERENCES objects (`id`) ON DELETE CASCADE) {$charset}");
            $db->executeStatement("CREATE VIEW `object_{$id}` AS SELECT s.*, o.* FROM `object_store_{$id}` s JOIN objects o ON o.id = s.oo_id");
        }
        $db->executeStatement('INSERT INTO stub_schema VALUES (?)', [$fingerprint]);

        return true;
    }

    /** The DBAL major version this suite runs on: 3 (bookworm) or 4 (trixie, sid). */
    public static function dbalMajor(): int
    {
        return method_exists(Connection::class, 'getEventManager') ? 3 : 4;
    }
}
