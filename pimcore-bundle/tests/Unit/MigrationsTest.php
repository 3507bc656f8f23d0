<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Tests\Unit;

use Doctrine\DBAL\Connection;
use PHPUnit\Framework\Attributes\DataProvider;
use Pimingestd\PimcoreBundle\DependencyInjection\PimingestdPimcoreExtension;
use Pimingestd\PimcoreBundle\Ledger\Ledger;
use Pimingestd\PimcoreBundle\Ledger\Schema;
use Pimingestd\PimcoreBundle\Tests\Application\src\MigrationRunner;
use Symfony\Component\DependencyInjection\ContainerBuilder;
use Symfony\Component\DependencyInjection\Extension\Extension;

/**
 * The bundle's migrations are found where Pimcore looks for them (`doctrine_migrations.migrations_paths`,
 * which the extension prepends), and run as doctrine/migrations runs them, they leave the same ledger as
 * `pimingest:setup` on a fresh database, on one an earlier version of the bundle made, and on one setup made.
 */
final class MigrationsTest extends Databases
{
    private const V1 = 'Pimingestd\PimcoreBundle\Migrations\Version20261201000000';
    private const V2 = 'Pimingestd\PimcoreBundle\Migrations\Version20261202000000';
    private const V3 = 'Pimingestd\PimcoreBundle\Migrations\Version20261206000000';
    private const V4 = 'Pimingestd\PimcoreBundle\Migrations\Version20261207000000';

    /** @return array<string, string> namespace => folder, as the app's DoctrineMigrationsBundle receives them */
    private static function registeredPaths(bool $withMigrationsBundle = true): array
    {
        $container = new ContainerBuilder();
        if ($withMigrationsBundle) {
            $container->registerExtension(new class () extends Extension {
                public function getAlias(): string
                {
                    return 'doctrine_migrations';
                }

                public function load(array $configs, ContainerBuilder $container): void
                {
                }
            });
        }
        $extension = new PimingestdPimcoreExtension();
        $container->registerExtension($extension);
        $extension->prepend($container);
        $paths = [];
        foreach ($container->getExtensionConfig('doctrine_migrations') as $config) {
            $paths += $config['migrations_paths'] ?? [];
        }

        return $paths;
    }

    /** @return list<string> */
    private static function migrate(Connection $db): array
    {
        $ran = [];
        foreach (self::registeredPaths() as $namespace => $dir) {
            $ran = [...$ran, ...MigrationRunner::migrate($db, $namespace, $dir)];
        }

        return $ran;
    }

    /** @return list<string> */
    private static function chunkColumns(Connection $db): array
    {
        $columns = array_map('strtolower', array_keys($db->createSchemaManager()->listTableColumns(Schema::CHUNK)));
        sort($columns);

        return $columns;
    }

    public function testTheExtensionRegistersItsMigrationsWithDoctrineMigrationsBundle(): void
    {
        $paths = self::registeredPaths();
        self::assertSame(['Pimingestd\PimcoreBundle\Migrations'], array_keys($paths));
        $dir = realpath($paths['Pimingestd\PimcoreBundle\Migrations']);
        self::assertNotFalse($dir);
        $found = array_map(static fn (string $f): string => basename($f, '.php'), glob($dir . '/Version*.php') ?: []);
        self::assertSame(['Version20261201000000', 'Version20261202000000', 'Version20261206000000', 'Version20261207000000'], $found);
        self::assertSame([], self::registeredPaths(false), 'no doctrine_migrations configuration without its bundle');
    }

    /**
     * @dataProvider databases
     */
    #[DataProvider('databases')]
    public function testOnAFreshDatabaseTheMigrationsMakeTheLedgerSetupWould(string $kind): void
    {
        $db = $this->connect($kind, setup: false);
        self::assertSame([self::V1, self::V2, self::V3, self::V4], self::migrate($db));
        self::assertSame([], (new Ledger($db))->setup(), 'setup finds nothing left to create or convert');
        self::assertContains('refused', self::chunkColumns($db));
        self::assertSame([], self::migrate($db), 'a second migrate runs nothing');
    }

    /**
     * @dataProvider databases
     */
    #[DataProvider('databases')]
    public function testOnALedgerTheFirstVersionMadeTheLaterMigrationsAddWhatIsMissing(string $kind): void
    {
        $db = $this->connect($kind);  // then taken back to what Version20261201000000 created before v1.1
        $db->executeStatement('ALTER TABLE ' . Schema::CHUNK . ' DROP COLUMN refused');
        $db->executeStatement('ALTER TABLE ' . Schema::CHUNK . ' DROP COLUMN tombstones');
        $db->executeStatement('DROP TABLE ' . Schema::MARK);  // the data_object applier's marks came later
        if ($kind === 'mariadb') {
            foreach ([Schema::INGESTION, Schema::CHUNK, Schema::RECORD] as $table) {
                $db->executeStatement("ALTER TABLE {$table} CONVERT TO CHARACTER SET utf8mb3 COLLATE utf8mb3_unicode_ci");
            }
        }
        MigrationRunner::markDone($db, self::V1);
        self::assertNotContains('refused', self::chunkColumns($db));

        self::assertSame([self::V2, self::V3, self::V4], self::migrate($db));
        self::assertContains('refused', self::chunkColumns($db));
        self::assertTrue($db->createSchemaManager()->tablesExist([Schema::MARK]), 'Version20261207000000 adds the marks');
        self::assertContains('tombstones', self::chunkColumns($db));
        self::assertSame([], Schema::charsetFixes($db));
        self::assertSame([], (new Ledger($db))->setup());
    }

    /**
     * @dataProvider databases
     */
    #[DataProvider('databases')]
    public function testAfterPimingestSetupTheMigrationsRunWithoutChangingAnything(string $kind): void
    {
        $db = $this->connect($kind);
        $before = self::chunkColumns($db);
        self::assertSame([self::V1, self::V2, self::V3, self::V4], self::migrate($db));
        self::assertSame($before, self::chunkColumns($db));
    }
}
