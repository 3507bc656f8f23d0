<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Messenger;

use Doctrine\DBAL\Exception\RetryableException;
use Pimingestd\PimcoreBundle\Ack\AckSender;
use Pimingestd\PimcoreBundle\Apply\ApplierRegistry;
use Pimingestd\PimcoreBundle\Apply\Chunk;
use Pimingestd\PimcoreBundle\Apply\RecordByRecord;
use Pimingestd\PimcoreBundle\Apply\RecordRejected;
use Pimingestd\PimcoreBundle\Ledger\Ledger;
use Pimingestd\PimcoreBundle\Ledger\Marks;
use Psr\Log\LoggerInterface;
use Symfony\Component\Messenger\Attribute\AsMessageHandler;

/**
 * The worker's half. Two ways to apply a chunk, by the applier:
 *
 * - An applier that writes through the connection (table, custom ones): one transaction holds the ledger's
 *   "applied" mark and the records' effect, so a crash at any instant leaves both or neither.
 * - A RecordByRecord applier (data_object: Pimcore's save() owns its transaction and its deadlock retry):
 *   no transaction is held across the chunk. Each record is saved in its own and marked right after in a
 *   short one of ours (pimingest_mark); the chunk is marked applied when every record is applied or
 *   refused. A redelivery skips the marked records (README.md, "Exactly once").
 *
 * The ACK goes out only after the chunk is marked applied.
 *
 * - Applied before (a re-send, or a message delivered again after a crash): ACK again, apply nothing; the
 *   ACK lists the same refused records as the first.
 * - Pimcore refuses a record inside Chunk::each() (the built-in appliers): that record's savepoint is rolled
 *   back, the others commit, and the ACK lists it in `rejected` (protocol v1.1), kept with the chunk.
 * - An applier throws RecordRejected out of apply(): roll back, release the chunk (a re-send is applied
 *   afresh), send a reject naming the record's offset and field (retryable: false).
 * - A deadlock or lock timeout: roll back, release, reject with retryable: true (the daemon re-sends).
 * - Anything else: the exception reaches Messenger, whose retry strategy handles it (nothing committed).
 */
#[AsMessageHandler]
final class ApplyChunkHandler
{
    public function __construct(
        private readonly Ledger $ledger,
        private readonly ApplierRegistry $appliers,
        private readonly AckSender $acks,
        private readonly LoggerInterface $logger,
    ) {
    }

    public function __invoke(ApplyChunk $message): void
    {
        $db = $this->ledger->connection();
        $id = $message->ingestionId;
        $n = $message->n;
        $db->beginTransaction();
        try {
            // Only the chunk's row: workers apply different chunks of one ingestion at once (v2 by_key). The
            // order was kept when the chunks were taken (strict takes chunk n only once n-1 is applied).
            $row = $this->ledger->lockChunk($id, $n, false);
            if ($row === null) {
                $db->commit();
                $this->logger->info('pimingest: chunk no longer taken; nothing to do', ['ingestion' => $id, 'chunk' => $n]);

                return;
            }
            $refused = $row['refused'];
            if ($row['state'] !== 'applied') {
                $records = Chunk::split((string) $row['body']);
                if (\count($records) !== $row['records']) {
                    throw new RecordRejected($row['first_record'], null, \count($records) . " records in the body, the header said {$row['records']}");
                }
                $applier = $this->appliers->for($row['file_name']);
                if ($applier instanceof RecordByRecord) {
                    $db->commit();  // the chunk's row is read; no transaction is held while Pimcore saves
                    $this->applyRecordByRecord($id, $n, $row, $records, $applier);

                    return;
                }
                $chunk = new Chunk($id, $n, $row['first_record'], $row['file_name'], $records, self::savepoints($db));
                $applier->apply($chunk);
                $refused = $chunk->refused();
                $this->ledger->markApplied($id, $n, microtime(true), $refused, $chunk->tombstones());
            }
            $db->commit();
        } catch (RecordRejected $e) {
            self::rollBack($db);
            // The reason goes to the daemon (and its operator); the log names only the record and the field.
            $this->reject($id, $n, $e->getMessage(), false, ['record' => $e->offset, 'field' => $e->field]);

            return;
        } catch (RetryableException $e) {
            self::rollBack($db);
            $this->reject($id, $n, 'database busy (deadlock or lock timeout): ' . $e->getMessage(), true, ['error' => \get_class($e)]);

            return;
        } catch (\Throwable $e) {
            self::rollBack($db);

            throw $e;
        }
        $this->logger->info('pimingest: chunk applied', ['ingestion' => $id, 'chunk' => $n, 'records' => $row['records'], 'refused' => \count($refused)]);
        $this->acks->send($id, $n, $row['checksum'], 'ack', rejected: $refused);
    }

    /**
     * A RecordByRecord applier (data_object): each record is saved in Pimcore's own short transaction and
     * marked right after, in one of ours; the chunk is marked applied once every record is applied or
     * refused. A redelivery skips the marked records. Only one worker applies a chunk at a time (a named
     * lock held by its connection); a duplicate message finds it taken and leaves the ACK to that worker.
     *
     * @param array{checksum: string, records: int, first_record: int, state: string, body: ?string, file_name: ?string, refused: list<array{index: int, reason: string, field: ?string}>} $row
     * @param list<string> $records
     */
    private function applyRecordByRecord(string $id, int $n, array $row, array $records, RecordByRecord $applier): void
    {
        $db = $this->ledger->connection();
        if ($db->isTransactionActive()) {
            throw new \LogicException('pimingest: a transaction is open around the chunk handler (a doctrine_transaction middleware on the bus?); the data_object applier lets Pimcore own its save transactions and must not be nested');
        }
        if (!$this->ledger->claim($id, $n)) {
            $this->logger->info('pimingest: chunk being applied by another worker; it ACKs', ['ingestion' => $id, 'chunk' => $n]);

            return;
        }
        try {
            // The row was read before the claim: the worker that held it may have finished the chunk since
            // (and dropped its marks), or it was released and taken again with other bytes. Read it again under
            // the claim: applied means ACK again and apply nothing; gone or other bytes, leave it to its message.
            $now = self::retrying(fn (): ?array => $db->transactional(fn (): ?array => $this->ledger->lockChunk($id, $n, false)));
            if ($now === null || $now['checksum'] !== $row['checksum'] || $now['state'] === 'applied') {  // unclaimed in `finally`
                if ($now !== null && $now['checksum'] === $row['checksum']) {
                    $this->acks->send($id, $n, $now['checksum'], 'ack', rejected: $now['refused']);
                }

                return;
            }
            $marks = Marks::begin($this->ledger, $id, $n, $row['checksum']);
            $chunk = new Chunk($id, $n, $row['first_record'], $row['file_name'], $records, null, $marks);
            $applier->apply($chunk);
            $refused = $chunk->refused();
            $applied = self::retrying(fn (): bool => $db->transactional(function () use ($id, $n, $refused, $chunk): bool {
                $now = $this->ledger->lockChunk($id, $n, false);
                if ($now === null) {
                    return false;
                }
                if ($now['state'] !== 'applied') {
                    $this->ledger->markApplied($id, $n, microtime(true), $refused, $chunk->tombstones());
                }

                return true;
            }));
        } catch (RetryableException $e) {
            // Pimcore gave up on a deadlock after its own retries: the records marked so far stand, the chunk
            // is released, and the daemon's re-send resumes after them.
            $this->reject($id, $n, 'database busy (deadlock or lock timeout): ' . $e->getMessage(), true, ['error' => \get_class($e)]);

            return;
        } finally {
            $this->ledger->unclaim($id, $n);
        }
        if (!$applied) {
            return;
        }
        $this->logger->info('pimingest: chunk applied', ['ingestion' => $id, 'chunk' => $n, 'records' => $row['records'], 'refused' => \count($refused)]);
        $this->acks->send($id, $n, $row['checksum'], 'ack', rejected: $refused);
    }

    /**
     * @template T
     *
     * @param callable(): T $work a short transaction of the bundle's own
     *
     * @return T
     */
    private static function retrying(callable $work): mixed
    {
        for ($attempt = 1; ; ++$attempt) {
            try {
                return $work();
            } catch (RetryableException $e) {
                if ($attempt >= 8) {
                    throw $e;
                }
                usleep(random_int(20, 100) * 1000 * $attempt);
            }
        }
    }

    /** Roll back the chunk's transaction if it is still open (a RecordByRecord applier runs after it). */
    private static function rollBack(\Doctrine\DBAL\Connection $db): void
    {
        if ($db->isTransactionActive()) {
            $db->rollBack();
        }
    }

    /** One record's writes in a savepoint of the chunk's transaction: undone alone when it is refused. */
    private static function savepoints(\Doctrine\DBAL\Connection $db): \Closure
    {
        return static function (callable $apply) use ($db): void {
            $db->createSavepoint('pimingest_record');
            try {
                $apply();
            } catch (\Throwable $e) {
                $db->rollbackSavepoint('pimingest_record');
                throw $e;
            }
            $db->releaseSavepoint('pimingest_record');
        };
    }

    /** @param array<string, mixed> $logged */
    private function reject(string $id, int $n, string $reason, bool $retryable, array $logged): void
    {
        $db = $this->ledger->connection();
        $row = null;
        $db->transactional(function () use ($id, $n, &$row): void {
            $row = $this->ledger->lockChunk($id, $n);
            $this->ledger->release($id, $n);
        });
        if ($row === null) {
            return;
        }
        $this->logger->warning('pimingest: chunk rejected', ['ingestion' => $id, 'chunk' => $n, 'retryable' => $retryable] + $logged);
        $this->acks->send($id, $n, $row['checksum'], 'reject', $reason, $retryable);
    }
}
