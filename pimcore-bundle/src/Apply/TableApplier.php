<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Apply;

use Doctrine\DBAL\Connection;
use Pimingestd\PimcoreBundle\Ledger\Schema;

/**
 * Raw records into `pimingest_record` (ingestion_id, chunk, position, data): each record's exact JSON
 * text, for integrators who process them with their own code or Data Importer's SQL source.
 */
final class TableApplier implements ApplierInterface
{
    private const BATCH = 500;

    public function __construct(private readonly Connection $db)
    {
    }

    public function apply(Chunk $chunk): void
    {
        $rows = [];
        foreach ($chunk->records as $i => $record) {
            $rows[] = [$chunk->ingestionId, $chunk->n, $chunk->firstRecord + $i, $record];
            if (\count($rows) === self::BATCH) {
                $this->insert($rows);
                $rows = [];
            }
        }
        if ($rows !== []) {
            $this->insert($rows);
        }
    }

    /** @param list<array{string, int, int, string}> $rows */
    private function insert(array $rows): void
    {
        $sql = 'INSERT INTO ' . Schema::RECORD . ' (ingestion_id, chunk, position, data) VALUES '
            . implode(', ', array_fill(0, \count($rows), '(?, ?, ?, ?)'));
        $this->db->executeStatement($sql, array_merge(...$rows));
    }
}
