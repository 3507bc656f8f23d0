<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Tests\Unit;

use Doctrine\DBAL\Connection;
use PHPUnit\Framework\Attributes\DataProvider;
use Pimingestd\PimcoreBundle\Apply\Chunk;
use Pimingestd\PimcoreBundle\Apply\TableApplier;
use Pimingestd\PimcoreBundle\Ledger\Ledger;
use Pimingestd\PimcoreBundle\Ledger\Schema;

/**
 * The ledger's tables on MariaDB are utf8mb4 with Pimcore's table options, so that under Pimcore's
 * `sql_mode=''` (no strict mode: a character the column cannot hold becomes `?`, with a warning only) every
 * record's JSON text, 4-byte characters included, comes back byte for byte; a ledger made utf8mb3 by an
 * earlier `pimingest:setup` is converted by the next one.
 */
final class SchemaTest extends Databases
{
    private const ING = '0123456789abcdef0123456789abcdef';
    private const RECORD = '{"name":"Prodükt 😀 — 𝄞 𠜎","sku":"SKU-1"}';

    private function roundTrip(Connection $db): string
    {
        $db->executeStatement("SET SESSION sql_mode = ''");  // as Pimcore's connection sets it
        $db->executeStatement('DELETE FROM ' . Schema::RECORD);
        (new TableApplier($db))->apply(new Chunk(self::ING, 1, 0, 'p.jsonl', [self::RECORD]));

        return (string) $db->fetchOne('SELECT data FROM ' . Schema::RECORD . ' WHERE ingestion_id = ?', [self::ING]);
    }

    /** @return array<string, array{string, string}> table => [collation, engine] */
    private function options(Connection $db): array
    {
        $rows = $db->fetchAllAssociative(
            'SELECT TABLE_NAME AS t, TABLE_COLLATION AS c, ENGINE AS e FROM information_schema.TABLES'
            . " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME LIKE 'pimingest\\_%' ORDER BY TABLE_NAME",
        );
        $out = [];
        foreach ($rows as $row) {
            $out[$row['t']] = [$row['c'], $row['e']];
        }

        return $out;
    }

    /**
     * @dataProvider servers
     */
    #[DataProvider('servers')]
    public function testFourByteCharactersSurviveByteForByteUnderAnEmptySqlMode(string $kind): void
    {
        $db = $this->connect($kind);
        self::assertSame(bin2hex(self::RECORD), bin2hex($this->roundTrip($db)));
        $expected = [Schema::CHUNK => [Schema::COLLATION, 'InnoDB'], Schema::INGESTION => [Schema::COLLATION, 'InnoDB'], Schema::MARK => [Schema::COLLATION, 'InnoDB'], Schema::RECORD => [Schema::COLLATION, 'InnoDB']];
        self::assertSame($expected, $this->options($db));
    }

    /**
     * @dataProvider servers
     */
    #[DataProvider('servers')]
    public function testSetupConvertsALedgerAnEarlierSetupMadeUtf8mb3(string $kind): void
    {
        $db = $this->connect($kind);
        foreach ([Schema::INGESTION, Schema::CHUNK, Schema::RECORD] as $table) {
            $db->executeStatement("ALTER TABLE {$table} CONVERT TO CHARACTER SET utf8mb3 COLLATE utf8mb3_unicode_ci");
        }
        self::assertNotSame(self::RECORD, $this->roundTrip($db));  // the loss this guards against: `?` for each
        self::assertSame([Schema::CHUNK, Schema::INGESTION, Schema::MARK, Schema::RECORD], array_keys($this->options($db)));
        self::assertCount(3, Schema::charsetFixes($db));

        (new Ledger($db))->setup();
        self::assertSame([], Schema::charsetFixes($db));
        self::assertSame(self::RECORD, $this->roundTrip($db));
        self::assertSame([Schema::COLLATION], array_values(array_unique(array_column($this->options($db), 0))));
    }

    public function testSqliteNeedsNoConversionAndKeepsTheTextAsWritten(): void
    {
        $db = $this->connect('sqlite');
        self::assertSame([], Schema::charsetFixes($db));
        (new TableApplier($db))->apply(new Chunk(self::ING, 1, 0, 'p.jsonl', [self::RECORD]));
        self::assertSame(self::RECORD, $db->fetchOne('SELECT data FROM ' . Schema::RECORD));
    }
}
