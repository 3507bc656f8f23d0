<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Messenger;

use Doctrine\DBAL\Exception\RetryableException;
use Pimingestd\PimcoreBundle\Ack\AckSender;
use Pimingestd\PimcoreBundle\Apply\ApplierRegistry;
use Pimingestd\PimcoreBundle\Apply\Chunk;
use Pimingestd\PimcoreBundle\Apply\RecordRejected;
use Pimingestd\PimcoreBundle\Ledger\Ledger;
use Psr\Log\LoggerInterface;
use Symfony\Component\Messenger\Attribute\AsMessageHandler;

/**
 * The worker's half: one transaction holds the ledger's "applied" mark and the records' effect, so a
 * crash at any instant leaves both or neither; the ACK goes out only after the commit.
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
                $chunk = new Chunk($id, $n, $row['first_record'], $row['file_name'], $records, self::savepoints($db));
                $this->appliers->for($row['file_name'])->apply($chunk);
                $refused = $chunk->refused();
                $this->ledger->markApplied($id, $n, microtime(true), $refused, $chunk->tombstones());
            }
            $db->commit();
        } catch (RecordRejected $e) {
            $db->rollBack();
            // The reason goes to the daemon (and its operator); the log names only the record and the field.
            $this->reject($id, $n, $e->getMessage(), false, ['record' => $e->offset, 'field' => $e->field]);

            return;
        } catch (RetryableException $e) {
            $db->rollBack();
            $this->reject($id, $n, 'database busy (deadlock or lock timeout): ' . $e->getMessage(), true, ['error' => \get_class($e)]);

            return;
        } catch (\Throwable $e) {
            if ($db->isTransactionActive()) {
                $db->rollBack();
            }
            throw $e;
        }
        $this->logger->info('pimingest: chunk applied', ['ingestion' => $id, 'chunk' => $n, 'records' => $row['records'], 'refused' => \count($refused)]);
        $this->acks->send($id, $n, $row['checksum'], 'ack', rejected: $refused);
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
