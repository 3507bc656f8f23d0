<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Apply;

/**
 * A chunk's per-record progress, for a RecordByRecord applier: what each record's outcome was on an earlier
 * delivery, and where to write it now.
 */
interface Progress
{
    /** @return array{outcome: string, field: ?string, reason: ?string}|null the record's mark, if it has one */
    public function marked(int $index): ?array;

    /** The chunk's apply began on an earlier delivery (a crash or a redelivery came between). */
    public function resumed(): bool;

    /** Record one record's outcome (null: applied), durably, before the next record begins. */
    public function mark(int $index, ?RecordRejected $refused, string $text): void;
}
