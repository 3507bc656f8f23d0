<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Messenger;

/**
 * "Apply (or re-ACK) chunk n of this ingestion." Small on purpose: the body waits in the ledger row.
 */
final class ApplyChunk
{
    public function __construct(public readonly string $ingestionId, public readonly int $n)
    {
    }
}
