<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Tests\Application\src;

use Doctrine\DBAL\Connection;
use Pimingestd\PimcoreBundle\Apply\ApplierInterface;
use Pimingestd\PimcoreBundle\Apply\Chunk;
use Pimingestd\PimcoreBundle\Apply\RecordRejected;
use Pimingestd\PimcoreBundle\Ledger\Schema;

/**
 * A named stand-in for an applier Pimcore refuses some records of (test application only): each record is
 * written to pimingest_record first, then refused when its sku is listed in PIMINGEST_REFUSE, so the test
 * sees that the savepoint undid the refused record's write while the chunk's others committed.
 */
final class RefusingApplier implements ApplierInterface
{
    public function __construct(private readonly Connection $db, private readonly string $refuse)
    {
    }

    public function apply(Chunk $chunk): void
    {
        $refused = array_filter(explode(',', $this->refuse));
        $chunk->each(function (int $i, string $text) use ($chunk, $refused): void {
            $this->db->insert(Schema::RECORD, [
                'ingestion_id' => $chunk->ingestionId, 'chunk' => $chunk->n, 'position' => $chunk->firstRecord + $i, 'data' => $text,
            ]);
            $sku = (string) (Chunk::decode($text)['sku'] ?? '');
            if (\in_array($sku, $refused, true)) {
                throw new RecordRejected($chunk->firstRecord + $i, 'sku', "unknown category for {$sku}");
            }
        });
    }
}
