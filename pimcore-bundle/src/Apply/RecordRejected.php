<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Apply;

/**
 * Pimcore refused a record. Thrown inside Chunk::each(), it undoes that record's writes only and lists the
 * record in the ACK's `rejected` (protocol v1.1); thrown from an applier's apply() itself, the whole chunk
 * is rolled back and rejected, naming the record's offset and field.
 */
final class RecordRejected extends \RuntimeException
{
    public function __construct(public readonly int $offset, public readonly ?string $field, public readonly string $reason)
    {
        parent::__construct("record {$offset}" . ($field !== null ? ", field {$field}" : '') . ": {$reason}");
    }
}
