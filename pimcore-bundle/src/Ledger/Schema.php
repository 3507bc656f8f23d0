<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Ledger;

use Doctrine\DBAL\Schema\Schema as DbalSchema;
use Doctrine\DBAL\Types\Types;

/**
 * The ledger's tables, in Pimcore's own database. One definition, used by the migration and by
 * `pimingest:setup` alike.
 *
 * - pimingest_ingestion: one row per ingestion; `next_chunk` is the chunk the next POST must carry.
 * - pimingest_chunk: one row per chunk taken; `state` is queued (taken, its body kept until applied) or
 *   applied (in the same transaction as the records' effect).
 * - pimingest_record: the `table` applier's output.
 * - pimingest_mark: the per-record appliers' progress (data_object): one row per record of a chunk not
 *   applied yet, written right after the record's own Pimcore save, in a short transaction of its own;
 *   dropped when the chunk is marked applied. Position -1 says the chunk's apply has begun.
 */
final class Schema
{
    public const INGESTION = 'pimingest_ingestion';
    public const CHUNK = 'pimingest_chunk';
    public const RECORD = 'pimingest_record';
    public const MARK = 'pimingest_mark';

    public static function define(DbalSchema $schema): void
    {
        $t = $schema->createTable(self::INGESTION);
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

        $c = $schema->createTable(self::CHUNK);
        $c->addColumn('ingestion_id', Types::STRING, ['length' => 32]);
        $c->addColumn('n', Types::INTEGER);
        $c->addColumn('checksum', Types::STRING, ['length' => 71]);
        $c->addColumn('records', Types::INTEGER);
        $c->addColumn('first_record', Types::BIGINT);
        $c->addColumn('state', Types::STRING, ['length' => 16]);
        $c->addColumn('body', Types::BLOB, ['notnull' => false, 'length' => 4294967295]);
        $c->addColumn('received_at', Types::FLOAT);
        $c->addColumn('applied_at', Types::FLOAT, ['notnull' => false]);
        self::chunkOutcomes($c);
        $c->setPrimaryKey(['ingestion_id', 'n']);

        $r = $schema->createTable(self::RECORD);
        $r->addColumn('ingestion_id', Types::STRING, ['length' => 32]);
        $r->addColumn('chunk', Types::INTEGER);
        $r->addColumn('position', Types::BIGINT);
        $r->addColumn('data', Types::TEXT, ['length' => 4294967295]);
        $r->setPrimaryKey(['ingestion_id', 'chunk', 'position']);

        self::marks($schema);
    }

    /**
     * One record's outcome (applied, refused, or `begun` at position -1), for the chunk with `checksum`: a
     * chunk released and taken again is the same bytes, and its marks still count.
     */
    public static function marks(DbalSchema $schema): void
    {
        $m = $schema->createTable(self::MARK);
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

    /** Protocol v1.1: the records refused in the chunk's ACK (JSON), and its tombstones taken. */
    public static function chunkOutcomes(\Doctrine\DBAL\Schema\Table $c): void
    {
        $c->addColumn('refused', Types::TEXT, ['notnull' => false]);
        $c->addColumn('tombstones', Types::INTEGER, ['default' => 0]);
    }
}
