<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Tests\Unit;

use Doctrine\DBAL\Connection;
use Pimingestd\PimcoreBundle\Ledger\Ledger;
use Pimingestd\PimcoreBundle\Tests\Application\src\ConnectionFactory;
use PHPUnit\Framework\TestCase;

/**
 * Real databases for the ledger tests: an SQLite file, and the MariaDB server named by
 * PIMINGEST_TEST_MYSQL_URL (tests/test_pimcore_bundle.py starts one and sets it; the Python wrapper fails
 * if any test here was skipped).
 */
abstract class Databases extends TestCase
{
    /** @var list<Connection> */
    private array $opened = [];

    /** @return array<string, array{string}> */
    public static function databases(): array
    {
        return ['sqlite' => ['sqlite'], 'mariadb' => ['mariadb']];
    }

    /** @return array<string, array{string}> */
    public static function servers(): array
    {
        return ['mariadb' => ['mariadb']];
    }

    /**
     * A database of `$kind`, with the ledger's tables (none with `$setup` false); `$fresh` false: a second
     * connection to the last one.
     */
    protected function connect(string $kind, bool $fresh = true, bool $setup = true): Connection
    {
        if (!$fresh) {
            $db = \Doctrine\DBAL\DriverManager::getConnection($this->opened[\count($this->opened) - 1]->getParams());
            $this->opened[] = $db;

            return $db;
        }
        if ($kind === 'sqlite') {
            $file = tempnam(sys_get_temp_dir(), 'pimingest') . '.sqlite';
            $db = ConnectionFactory::create("sqlite:///{$file}");
        } else {
            $url = getenv('PIMINGEST_TEST_MYSQL_URL');
            if (!\is_string($url) || $url === '') {
                self::markTestSkipped('PIMINGEST_TEST_MYSQL_URL is not set (tests/test_pimcore_bundle.py starts MariaDB and sets it)');
            }
            $db = ConnectionFactory::create($url);
            foreach (['pimingest_mark', 'pimingest_record', 'pimingest_chunk', 'pimingest_ingestion', 'migration_versions'] as $table) {
                $db->executeStatement("DROP TABLE IF EXISTS {$table}");
            }
        }
        if ($setup) {
            (new Ledger($db))->setup();
        }
        $this->opened[] = $db;

        return $db;
    }

    protected function tearDown(): void
    {
        foreach ($this->opened as $db) {
            $db->close();
        }
        $this->opened = [];
    }
}
