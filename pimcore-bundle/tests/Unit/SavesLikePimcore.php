<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Tests\Unit;

use Doctrine\DBAL\Connection;
use Doctrine\DBAL\Exception\RetryableException;
use Pimingestd\PimcoreBundle\Apply\Chunk;
use Pimingestd\PimcoreBundle\Apply\RecordByRecord;
use Pimingestd\PimcoreBundle\Apply\RecordRejected;

/**
 * A RecordByRecord applier shaped like Pimcore's save(): begin a transaction on the shared connection, lock
 * the rows it writes, write, commit; a RetryableException rolls back and runs again, 5 attempts in all. A
 * record with `refuse` is refused inside its transaction, after its write (which the rollback undoes).
 */
final class SavesLikePimcore implements RecordByRecord
{
    public int $saves = 0;
    public int $deadlocks = 0;
    /** @var list<int> */
    public array $nesting = [];
    private int $position = 0;

    /**
     * @param array{int, string}|null $crashAt a record's index and before|after its save
     * @param array{int, callable(): void}|null $reverse at this record, lock A, call back, then lock B
     */
    public function __construct(
        private readonly Connection $db,
        private readonly ?array $crashAt = null,
        private readonly ?array $reverse = null,
        private readonly ?int $deadlockAt = null,
    ) {
    }

    public function apply(Chunk $chunk): void
    {
        $chunk->each(function (int $i, string $text) use ($chunk): void {
            $record = Chunk::decode($text);
            $sku = (string) $record['sku'];
            if ($chunk->inCrashWindow($i) && $this->db->fetchOne('SELECT body FROM rbr_object WHERE sku = ?', [$sku]) === $text) {
                return;  // the object holds it: saved before the last worker died, not marked
            }
            if ($this->crashAt === [$i, 'before']) {
                throw new Killed('killed');
            }
            $this->nesting[] = $this->db->getTransactionNestingLevel();
            $this->save($i, $sku, $text, ($record['refuse'] ?? false) === true, $chunk->firstRecord + $i);
            if ($this->crashAt === [$i, 'after']) {
                throw new Killed('killed');
            }
        });
    }

    private function save(int $i, string $sku, string $text, bool $refuse, int $offset): void
    {
        for ($attempt = 0; $attempt < 5; ++$attempt) {
            $this->db->beginTransaction();
            try {
                if ($this->reverse !== null && $this->reverse[0] === $i && $attempt === 0) {
                    $this->db->executeStatement("UPDATE rbr_lock SET n = n + 1 WHERE name = 'A'");
                    ($this->reverse[1])();
                    $this->db->executeStatement("UPDATE rbr_lock SET n = n + 1 WHERE name = 'B'");
                }
                if ($this->deadlockAt === $i) {
                    throw new \Doctrine\DBAL\Exception\DeadlockException(new FakeDriverError('Deadlock found when trying to get lock'), null);
                }
                $this->db->executeStatement('INSERT INTO rbr_object (sku, body) VALUES (?, ?) ON DUPLICATE KEY UPDATE body = VALUES(body)', [$sku, $text]);
                if ($refuse) {
                    throw new RecordRejected($offset, 'refuse', "record {$offset} refused");
                }
                $this->db->commit();
                ++$this->saves;

                return;
            } catch (RetryableException $e) {
                $this->db->rollBack();
                ++$this->deadlocks;
                if ($attempt === 4) {
                    throw $e;
                }
            } catch (\Throwable $e) {
                $this->db->rollBack();

                throw $e;
            }
        }
    }
}
