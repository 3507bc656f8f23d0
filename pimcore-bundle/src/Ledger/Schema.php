<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Ledger;

use Doctrine\DBAL\Connection;
use Doctrine\DBAL\Platforms\AbstractMySQLPlatform;
use Doctrine\DBAL\Schema\Schema as DbalSchema;
use Doctrine\DBAL\Schema\Table;
use Doctrine\DBAL\Types\Types;

/**
 * The ledger's tables, in Pimcore's own database. One definition, used by the migrations and by
 * `pimingest:setup` alike.
 *
 * - pimingest_ingestion: one row per ingestion; `next_chunk` is the chunk the next POST must carry.
 * - pimingest_chunk: one row per chunk taken; `state` is queued (taken, its body kept until applied) or
 *   applied (in the same transaction as the records' effect).
 * - pimingest_record: the `table` applier's output.
 * - pimingest_mark: the per-record appliers' progress (data_object): one row per record of a chunk not
 *   applied yet, written right after the record's own Pimcore save, in a short transaction of its own;
 *   dropped when the chunk is marked applied. Position -1 says the chunk's apply has begun.
 *
 * On MySQL and MariaDB every table is utf8mb4 and InnoDB, with the collation the app's connection configures
 * (DoctrineBundle's `default_table_options`, as a Pimcore project sets them) when that is a utf8mb4 one, else
 * utf8mb4_unicode_520_ci (Pimcore 12's). Without explicit options DBAL 3 writes `DEFAULT CHARACTER SET utf8`
 * (utf8mb3), and under Pimcore's `sql_mode=''` a 4-byte character is then stored as `?` without an error,
 * which breaks the table applier's exact JSON.
 *
 * `define()` only adds what the given schema lacks, so each migration can apply it to the database's schema,
 * fresh or upgraded, and `pimingest:setup` to an empty one. A later change to the tables goes here and into a
 * new migration that adds only what is missing; an earlier migration is never edited.
 */
final class Schema
{
    public const INGESTION = 'pimingest_ingestion';
    public const CHUNK = 'pimingest_chunk';
    public const RECORD = 'pimingest_record';
    public const MARK = 'pimingest_mark';

    public const CHARSET = 'utf8mb4';
    public const COLLATION = 'utf8mb4_unicode_520_ci';
    public const ENGINE = 'InnoDB';

    /** The ledger's tables that `$schema` lacks, and the columns its existing tables lack. */
    public static function define(DbalSchema $schema): void
    {
        if (!$schema->hasTable(self::INGESTION)) {
            $t = self::create($schema, self::INGESTION);
            $t->addColumn('ingestion_id', Types::STRING, ['length' => 32]);
            $t->addColumn('file_id', Types::STRING, ['length' => 71]);
            $t->addColumn('file_name', Types::STRING, ['length' => 1024, 'notnull' => false]);
            $t->addColumn('next_chunk', Types::INTEGER);
            $t->addColumn('records_taken', Types::BIGINT);
            $t->addColumn('status', Types::STRING, ['length' => 16]);
            $t->addColumn('created_at', Types::FLOAT);
            $t->addColumn('updated_at', Types::FLOAT);
            $t->addColumn('completed_at', Types::FLOAT, ['notnull' => false]);
            $t->setPrimaryKey(['ingestion_id']);
        }

        if (!$schema->hasTable(self::CHUNK)) {
            $c = self::create($schema, self::CHUNK);
            $c->addColumn('ingestion_id', Types::STRING, ['length' => 32]);
            $c->addColumn('n', Types::INTEGER);
            $c->addColumn('checksum', Types::STRING, ['length' => 71]);
            $c->addColumn('records', Types::INTEGER);
            $c->addColumn('first_record', Types::BIGINT);
            $c->addColumn('state', Types::STRING, ['length' => 16]);
            $c->addColumn('body', Types::BLOB, ['notnull' => false, 'length' => 4294967295]);
            $c->addColumn('received_at', Types::FLOAT);
            $c->addColumn('applied_at', Types::FLOAT, ['notnull' => false]);
            $c->setPrimaryKey(['ingestion_id', 'n']);
        }
        self::chunkOutcomes($schema->getTable(self::CHUNK));

        if (!$schema->hasTable(self::RECORD)) {
            $r = self::create($schema, self::RECORD);
            $r->addColumn('ingestion_id', Types::STRING, ['length' => 32]);
            $r->addColumn('chunk', Types::INTEGER);
            $r->addColumn('position', Types::BIGINT);
            $r->addColumn('data', Types::TEXT, ['length' => 4294967295]);
            $r->setPrimaryKey(['ingestion_id', 'chunk', 'position']);
        }
        self::marks($schema);
    }

    /** Protocol v1.1: the records refused in the chunk's ACK (JSON), and its tombstones taken; where missing. */
    public static function chunkOutcomes(Table $c): void
    {
        if (!$c->hasColumn('refused')) {
            $c->addColumn('refused', Types::TEXT, ['notnull' => false]);
        }
        if (!$c->hasColumn('tombstones')) {
            $c->addColumn('tombstones', Types::INTEGER, ['default' => 0]);
        }
    }

    /**
     * One record's outcome (applied, refused, or `begun` at position -1), for the chunk with `checksum`: a
     * chunk released and taken again is the same bytes, and its marks still count. Added where missing.
     */
    public static function marks(DbalSchema $schema): void
    {
        if ($schema->hasTable(self::MARK)) {
            return;
        }
        $m = self::create($schema, self::MARK);
        $m->addColumn('ingestion_id', Types::STRING, ['length' => 32]);
        $m->addColumn('n', Types::INTEGER);
        $m->addColumn('position', Types::INTEGER);
        $m->addColumn('checksum', Types::STRING, ['length' => 71]);
        $m->addColumn('outcome', Types::STRING, ['length' => 16]);
        $m->addColumn('field', Types::STRING, ['length' => 255, 'notnull' => false]);
        $m->addColumn('reason', Types::TEXT, ['notnull' => false]);
        $m->addColumn('content_hash', Types::STRING, ['length' => 64, 'notnull' => false]);
        $m->addColumn('marked_at', Types::FLOAT);
        $m->setPrimaryKey(['ingestion_id', 'n', 'position']);
    }

    /**
     * The statements that bring ledger tables made before this definition (utf8mb3 by DBAL 3's default, or
     * any other character set) to utf8mb4 with the options above. Empty except on MySQL and MariaDB.
     *
     * @return list<string>
     */
    public static function charsetFixes(Connection $db): array
    {
        if (!$db->getDatabasePlatform() instanceof AbstractMySQLPlatform) {
            return [];
        }
        $rows = $db->fetchAllAssociative(
            'SELECT TABLE_NAME AS name, TABLE_COLLATION AS tc FROM information_schema.TABLES'
            . ' WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN (?, ?, ?, ?) ORDER BY TABLE_NAME',
            [self::INGESTION, self::CHUNK, self::RECORD, self::MARK],
        );
        $fixes = [];
        foreach ($rows as $row) {
            if (!str_starts_with(strtolower((string) $row['tc']), self::CHARSET . '_')) {
                $fixes[] = "ALTER TABLE {$row['name']} CONVERT TO CHARACTER SET " . self::CHARSET . ' COLLATE ' . self::COLLATION;
            }
        }

        return $fixes;
    }

    /** A new table with the schema's default table options, made utf8mb4 and InnoDB where they are not. */
    private static function create(DbalSchema $schema, string $name): Table
    {
        $t = $schema->createTable($name);
        $defaults = $t->getOptions();
        if (strtolower((string) ($defaults['charset'] ?? '')) !== self::CHARSET) {
            $t->addOption('charset', self::CHARSET);
        }
        $collation = $defaults['collation'] ?? $defaults['collate'] ?? null;
        if (!\is_string($collation) || !str_starts_with(strtolower($collation), self::CHARSET . '_')) {
            $collation = self::COLLATION;
        }
        $t->addOption('collation', $collation);
        if (isset($defaults['collate'])) {
            $t->addOption('collate', $collation);  // DBAL 3 reads either key
        }
        if (!isset($defaults['engine'])) {
            $t->addOption('engine', self::ENGINE);
        }

        return $t;
    }
}
