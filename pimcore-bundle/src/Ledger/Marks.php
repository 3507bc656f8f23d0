<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Ledger;

use Doctrine\DBAL\Exception\RetryableException;
use Pimingestd\PimcoreBundle\Apply\Progress;
use Pimingestd\PimcoreBundle\Apply\RecordRejected;

/**
 * One chunk's per-record marks in pimingest_mark. Each mark is written in a short transaction of its own,
 * right after the record's save committed in Pimcore's: a deadlock or lock wait on it is retried here, so it
 * never leaves an object without its mark unless the worker dies in between (the crash window, which
 * Chunk::inCrashWindow() names on the next delivery).
 */
final class Marks implements Progress
{
    private const ATTEMPTS = 8;

    /** @param array<int, array{outcome: string, field: ?string, reason: ?string}> $marks */
    private function __construct(
        private readonly Ledger $ledger,
        private readonly string $ingestionId,
        private readonly int $n,
        private readonly string $checksum,
        private array $marks,
        private readonly bool $resumed,
    ) {
    }

    /** Load the chunk's marks, and note (position -1) that its apply has begun. */
    public static function begin(Ledger $ledger, string $ingestionId, int $n, string $checksum): self
    {
        $marks = $ledger->marks($ingestionId, $n, $checksum);
        $resumed = isset($marks[-1]);
        unset($marks[-1]);
        $self = new self($ledger, $ingestionId, $n, $checksum, $marks, $resumed);
        if (!$resumed) {
            $self->write(-1, 'begun', null, null, null);
        }

        return $self;
    }

    public function marked(int $index): ?array
    {
        return $this->marks[$index] ?? null;
    }

    public function resumed(): bool
    {
        return $this->resumed;
    }

    public function mark(int $index, ?RecordRejected $refused, string $text): void
    {
        $outcome = $refused === null ? 'applied' : 'refused';
        $this->write($index, $outcome, $refused?->field, $refused?->reason, hash('sha256', $text));
        $this->marks[$index] = ['outcome' => $outcome, 'field' => $refused?->field, 'reason' => $refused?->reason];
    }

    private function write(int $position, string $outcome, ?string $field, ?string $reason, ?string $hash): void
    {
        $db = $this->ledger->connection();
        for ($attempt = 1; ; ++$attempt) {
            try {
                $db->transactional(fn () => $this->ledger->mark(
                    $this->ingestionId, $this->n, $this->checksum, $position, $outcome, $field, $reason, $hash, microtime(true),
                ));

                return;
            } catch (RetryableException $e) {
                if ($attempt >= self::ATTEMPTS) {
                    throw $e;
                }
                usleep(random_int(20, 100) * 1000 * $attempt);
            }
        }
    }
}
