<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Apply;

/**
 * Applies one chunk's records. Called inside the chunk's database transaction, on the connection the
 * ledger uses: whatever it writes there commits together with the ledger's "applied" mark, or not at all.
 * Throw RecordRejected for a record Pimcore refuses (the transaction is rolled back and the chunk
 * rejected naming it); any other exception is retried by the worker.
 *
 * Tag a service implementing it with `pimingest.applier` and name it in the `appliers` configuration.
 */
interface ApplierInterface
{
    public function apply(Chunk $chunk): void;
}
