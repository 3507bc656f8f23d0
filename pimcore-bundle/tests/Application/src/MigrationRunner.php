<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Tests\Application\src;

use Doctrine\DBAL\Connection;
use Doctrine\Migrations\AbstractMigration;
use Psr\Log\NullLogger;

/**
 * `doctrine:migrations:migrate` for one configured path, as doctrine/migrations runs it (see
 * tests/Application/migrations.php): the versions in the path's namespace sorted by class name, each not yet
 * in the `migration_versions` table (Pimcore's storage table) run in turn: the database's schema is
 * introspected, a clone handed to up(), the SQL the migration added run first, then the difference between
 * the two schemas, then the version recorded.
 */
final class MigrationRunner
{
    public const TABLE = 'migration_versions';

    /** @return list<string> the versions run */
    public static function migrate(Connection $db, string $namespace, string $dir): array
    {
        $sm = $db->createSchemaManager();
        if (!\in_array(self::TABLE, array_map('strtolower', $sm->listTableNames()), true)) {
            $db->executeStatement('CREATE TABLE ' . self::TABLE . ' (version VARCHAR(191) NOT NULL PRIMARY KEY, executed_at VARCHAR(32) NULL)');
        }
        $done = array_map('strval', $db->fetchFirstColumn('SELECT version FROM ' . self::TABLE));
        $versions = [];
        foreach (glob($dir . '/Version*.php') ?: [] as $file) {
            $versions[] = rtrim($namespace, '\\') . '\\' . basename($file, '.php');
        }
        sort($versions, \SORT_STRING);
        $ran = [];
        foreach ($versions as $class) {
            if (\in_array($class, $done, true)) {
                continue;
            }
            /** @var AbstractMigration $migration */
            $migration = new $class($db, new NullLogger());
            $from = $db->createSchemaManager()->introspectSchema();
            $migration->preUp($from);
            $to = clone $from;
            $migration->up($to);
            $sql = [];
            foreach ($migration->getSql() as [$statement, $params, $types]) {
                $sql[] = [$statement, $params, $types];
            }
            $diff = $db->createSchemaManager()->createComparator()->compareSchemas($from, $to);
            foreach ($db->getDatabasePlatform()->getAlterSchemaSQL($diff) as $statement) {
                $sql[] = [$statement, [], []];
            }
            $migration->freeze();
            foreach ($sql as [$statement, $params, $types]) {
                $db->executeQuery($statement, $params, $types);
            }
            $migration->postUp($to);
            $db->insert(self::TABLE, ['version' => $class, 'executed_at' => date('c')]);
            $ran[] = $class;
        }

        return $ran;
    }

    /** Record `$class` as run without running it (an install made before it, as `doctrine:migrations:version --add`). */
    public static function markDone(Connection $db, string $class): void
    {
        self::migrate($db, 'None\\', '/nonexistent');
        $db->insert(self::TABLE, ['version' => $class, 'executed_at' => date('c')]);
    }
}
