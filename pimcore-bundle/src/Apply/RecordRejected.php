<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Apply;

/**
 * Pimcore refused a record: the chunk is rolled back and rejected, naming the record's offset in the
 * file and the field.
 */
final class RecordRejected extends \RuntimeException
{
    public function __construct(public readonly int $offset, public readonly ?string $field, string $reason)
    {
        parent::__construct("record {$offset}" . ($field !== null ? ", field {$field}" : '') . ": {$reason}");
    }
}
