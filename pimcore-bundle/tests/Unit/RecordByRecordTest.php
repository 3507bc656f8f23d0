<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Tests\Unit;

use Doctrine\DBAL\Connection;
use PHPUnit\Framework\Attributes\DataProvider;
use Pimingestd\PimcoreBundle\Ack\AckSender;
use Pimingestd\PimcoreBundle\Apply\ApplierRegistry;
use Pimingestd\PimcoreBundle\Apply\TableApplier;
use Pimingestd\PimcoreBundle\Ledger\Ledger;
use Pimingestd\PimcoreBundle\Messenger\ApplyChunk;
use Pimingestd\PimcoreBundle\Messenger\ApplyChunkHandler;
use Psr\Log\NullLogger;
use Symfony\Component\DependencyInjection\ServiceLocator;
use Symfony\Component\HttpClient\MockHttpClient;
use Symfony\Component\HttpClient\Response\MockResponse;

/**
 * The worker with an applier whose saves own their transactions, as Pimcore's save() does (begin, write,
 * commit on the shared connection, a deadlock retried up to 5 times): no transaction around the chunk, each
 * record marked right after its save, a redelivery resuming after the marked records. On MariaDB, with real
 * deadlocks from a second connection (a forked process) and a "SIGKILL" at every point of a chunk.
 */
final class RecordByRecordTest extends Databases
{
    private const ING = 'fedcba9876543210fedcba9876543210';

    /** @var list<array<string, mixed>> */
    private array $callbacks = [];

    private function handler(Connection $db, SavesLikePimcore $applier): ApplyChunkHandler
    {
        $acks = new AckSender(new MockHttpClient(function (string $method, string $url, array $options): MockResponse {
            $this->callbacks[] = json_decode($options['body'], true);

            return new MockResponse('{"result":"accepted"}', ['http_code' => 200]);
        }), Wire::CALLBACK, '', new NullLogger(), 2, 0.0);
        $registry = new ApplierRegistry([], 'objects', new ServiceLocator(['objects' => fn () => $applier]), new TableApplier($db));

        return new ApplyChunkHandler(new Ledger($db), $registry, $acks, new NullLogger());
    }

    /** @param list<array<string, mixed>> $records */
    private function take(Connection $db, int $n, array $records, int $offset = 0): string
    {
        [$headers, $body] = Wire::chunk(self::ING, $n, $records, $offset);
        $h = Wire::parse($headers, $body);
        $ledger = new Ledger($db);
        self::assertSame(Ledger::TAKEN, $db->transactional(fn () => $ledger->take($h, $body, microtime(true))));

        return $h->checksum;
    }

    private function objects(Connection $db): array
    {
        $rows = $db->fetchAllAssociative('SELECT sku, body FROM rbr_object ORDER BY sku');

        return array_column($rows, 'body', 'sku');
    }

    private function connectWithObjects(string $kind): Connection
    {
        $db = $this->connect($kind);
        $db->executeStatement('DROP TABLE IF EXISTS rbr_object');
        $db->executeStatement('DROP TABLE IF EXISTS rbr_lock');
        $db->executeStatement('CREATE TABLE rbr_object (sku VARCHAR(64) NOT NULL PRIMARY KEY, body TEXT NOT NULL) ENGINE=InnoDB');
        $db->executeStatement('CREATE TABLE rbr_lock (name VARCHAR(8) NOT NULL PRIMARY KEY, n INT NOT NULL) ENGINE=InnoDB');
        $db->executeStatement("INSERT INTO rbr_lock VALUES ('A', 0), ('B', 0)");

        return $db;
    }

    /** @return list<array<string, mixed>> */
    private static function records(): array
    {
        return [
            ['sku' => 'A', 'v' => 1],
            ['sku' => 'B', 'v' => 1],
            ['sku' => 'A', 'v' => 2],
            ['sku' => 'C', 'v' => 1, 'refuse' => true],
            ['sku' => 'B', 'v' => 2],
        ];
    }

    /** The last record of each key in file order, the refused one left out. */
    private static function expected(): array
    {
        return ['A' => '{"sku":"A","v":2}', 'B' => '{"sku":"B","v":2}'];
    }

    /**
     * Each record is saved in its own transaction, none is open around it, and the chunk is ACKed with the
     * refused record alone (by its index, field and reason); the marks are gone once the chunk is applied.
     *
     * @dataProvider servers
     */
    #[DataProvider('servers')]
    public function testEachRecordIsSavedInItsOwnTransactionAndARefusedOneIsRefusedAlone(string $kind): void
    {
        $db = $this->connectWithObjects($kind);
        $checksum = $this->take($db, 1, self::records(), 0);
        $applier = new SavesLikePimcore($db);
        $this->handler($db, $applier)(new ApplyChunk(self::ING, 1));
        self::assertSame(self::expected(), $this->objects($db));
        self::assertSame([0], array_unique($applier->nesting), 'no transaction is open when a record is saved');
        self::assertCount(1, $this->callbacks);
        $ack = $this->callbacks[0];
        self::assertSame(['ack', $checksum], [$ack['status'], $ack['checksum']]);
        self::assertSame([['index' => 3, 'reason' => 'record 3 refused', 'field' => 'refuse']], $ack['rejected']);
        self::assertSame(0, (int) $db->fetchOne('SELECT COUNT(*) FROM pimingest_mark'));
        self::assertSame('applied', $db->fetchOne('SELECT state FROM pimingest_chunk WHERE n = 1'));
        $this->handler($db, $applier)(new ApplyChunk(self::ING, 1));  // Messenger delivers it again
        self::assertSame(4, $applier->saves, 'nothing is saved again');
        self::assertSame($ack, $this->callbacks[1], 'the same ACK, the refused record included');
    }

    /** @return array<string, array{string, int, string}> */
    public static function crashes(): array
    {
        $points = [];
        foreach (self::records() as $i => $record) {
            $points["before the save of record {$i}"] = ['mariadb', $i, 'before'];
            if (!isset($record['refuse'])) {  // a refused record is never saved
                $points["between the save of record {$i} and its mark"] = ['mariadb', $i, 'after'];
            }
        }

        return $points;
    }

    /**
     * A worker killed at any point of a chunk (before a save, between a save and its mark) and the chunk
     * delivered again: the objects end as the last record of each key, each record's effect once, the
     * refused record refused, one ACK. The record caught between its save and its mark is not saved again,
     * because its object already holds it.
     *
     * @dataProvider crashes
     */
    #[DataProvider('crashes')]
    public function testAWorkerKilledAtAnyPointOfAChunkChangesNothingInTheFinalState(string $kind, int $at, string $when): void
    {
        $db = $this->connectWithObjects($kind);
        $checksum = $this->take($db, 1, self::records(), 0);
        $dying = new SavesLikePimcore($db, crashAt: [$at, $when]);
        try {
            $this->handler($db, $dying)(new ApplyChunk(self::ING, 1));
            self::fail('the worker was to die');
        } catch (Killed) {
        }
        self::assertSame([], $this->callbacks, 'a dead worker sends nothing');
        $db->close();  // its connection goes with it
        $db = $this->connect($kind, false);
        $next = new SavesLikePimcore($db);
        $this->handler($db, $next)(new ApplyChunk(self::ING, 1));
        self::assertSame(self::expected(), $this->objects($db));
        self::assertCount(1, $this->callbacks);
        self::assertSame(['ack', $checksum], [$this->callbacks[0]['status'], $this->callbacks[0]['checksum']]);
        self::assertSame([3], array_column($this->callbacks[0]['rejected'], 'index'));
        // Each record applied once over both workers: the one caught between its save and its mark included.
        $saved = $dying->saves + $next->saves;
        self::assertSame(4, $saved, 'saves over both deliveries');
    }

    /**
     * A second connection locks the rows a save needs in the reverse order: InnoDB picks the save as its
     * deadlock victim, Pimcore's own retry loop runs it again (nothing is nested, so it holds), and the
     * record ends saved and marked, every other record too.
     *
     * @dataProvider servers
     */
    #[DataProvider('servers')]
    public function testARealDeadlockInASaveIsRetriedByTheSaveAndTheRecordIsMarked(string $kind): void
    {
        $db = $this->connectWithObjects($kind);
        $db->executeStatement('CREATE TABLE IF NOT EXISTS rbr_ballast (i INT NOT NULL PRIMARY KEY) ENGINE=InnoDB');
        $db->executeStatement('DELETE FROM rbr_ballast');
        $this->take($db, 1, self::records(), 0);
        [$toChild, $fromChild] = [self::pipe(), self::pipe()];
        $params = $db->getParams();
        $pid = pcntl_fork();
        if ($pid === 0) {  // the second connection: lock B, then A, after a heavy write (so it is not the victim)
            $ok = false;
            try {
                $other = \Doctrine\DBAL\DriverManager::getConnection($params);
                $other->beginTransaction();
                for ($i = 0; $i < 200; ++$i) {
                    $other->executeStatement('INSERT INTO rbr_ballast VALUES (?)', [$i]);
                }
                $other->executeStatement("UPDATE rbr_lock SET n = n + 1 WHERE name = 'B'");
                fwrite($fromChild[1], "locked\n");
                fgets($toChild[0]);  // the save holds A now
                $other->executeStatement("UPDATE rbr_lock SET n = n + 1 WHERE name = 'A'");
                $other->commit();
                $ok = true;
            } finally {
                // Leave without PHP's shutdown, which would close the parent's connection it inherited.
                pcntl_exec($ok ? '/bin/true' : '/bin/false');
            }
        }
        self::assertSame("locked\n", fgets($fromChild[0]));
        $applier = new SavesLikePimcore($db, reverse: [2, static function () use ($toChild): void {
            fwrite($toChild[1], "go\n");
        }]);
        $this->handler($db, $applier)(new ApplyChunk(self::ING, 1));
        pcntl_waitpid($pid, $status);
        self::assertSame(0, pcntl_wexitstatus($status), 'the second connection committed');
        self::assertGreaterThanOrEqual(1, $applier->deadlocks, 'a real deadlock hit the save');
        self::assertSame(self::expected(), $this->objects($db));
        self::assertSame('ack', $this->callbacks[0]['status']);
        self::assertSame('applied', $db->fetchOne('SELECT state FROM pimingest_chunk WHERE n = 1'));
        self::assertSame(200, (int) $db->fetchOne('SELECT COUNT(*) FROM rbr_ballast'));
    }

    /**
     * A mark that waits too long for a lock (another connection holds the range its insert needs) is retried
     * in a short transaction of its own until it is written: the record is never left saved without its mark,
     * and the chunk completes.
     *
     * @dataProvider servers
     */
    #[DataProvider('servers')]
    public function testAMarkThatHitsALockWaitTimeoutIsRetriedUntilWritten(string $kind): void
    {
        $db = $this->connectWithObjects($kind);
        $this->take($db, 1, self::records(), 0);
        $db->executeStatement('SET SESSION innodb_lock_wait_timeout = 1');
        [$fromChild] = [self::pipe()];
        $params = $db->getParams();
        $pid = pcntl_fork();
        if ($pid === 0) {  // holds the marks' range of this ingestion until the worker has waited on it
            $ok = false;
            try {
                $other = \Doctrine\DBAL\DriverManager::getConnection($params);
                $other->beginTransaction();
                $other->fetchAllAssociative('SELECT * FROM pimingest_mark WHERE ingestion_id = ? FOR UPDATE', [self::ING]);
                fwrite($fromChild[1], "locked\n");
                $me = (int) $other->fetchOne('SELECT CONNECTION_ID()');
                for ($polls = 0; $polls < 200; ++$polls) {
                    $waiting = (int) $other->fetchOne("SELECT COUNT(*) FROM information_schema.INNODB_TRX WHERE trx_state = 'LOCK WAIT' AND trx_mysql_thread_id <> ?", [$me]);
                    if ($waiting > 0) {
                        break;
                    }
                    usleep(150000);  // InnoDB refreshes INNODB_TRX only when it was not read for 0.1 s
                }
                usleep(2500000);  // longer than the worker's lock wait timeout: it times out at least once
                $other->commit();
                $ok = $waiting > 0;
            } finally {
                pcntl_exec($ok ? '/bin/true' : '/bin/false');  // no PHP shutdown: it would close the parent's connection
            }
        }
        self::assertSame("locked\n", fgets($fromChild[0]));
        $applier = new SavesLikePimcore($db);
        $this->handler($db, $applier)(new ApplyChunk(self::ING, 1));
        pcntl_waitpid($pid, $status);
        self::assertSame(0, pcntl_wexitstatus($status), 'the worker waited on the held range');
        self::assertSame(self::expected(), $this->objects($db));
        self::assertSame(4, $applier->saves);
        self::assertSame('ack', $this->callbacks[0]['status']);
        self::assertSame(0, (int) $db->fetchOne('SELECT COUNT(*) FROM pimingest_mark'));
    }

    /**
     * A save that still deadlocks after Pimcore's 5 attempts: the chunk is rejected as retryable and released
     * with the records before it marked; the daemon's re-send resumes after them (nothing saved twice).
     *
     * @dataProvider servers
     */
    #[DataProvider('servers')]
    public function testASaveThatKeepsDeadlockingReleasesTheChunkAndTheResendResumesAfterTheMarkedRecords(string $kind): void
    {
        $db = $this->connectWithObjects($kind);
        $checksum = $this->take($db, 1, self::records(), 0);
        $stuck = new SavesLikePimcore($db, deadlockAt: 2);
        $this->handler($db, $stuck)(new ApplyChunk(self::ING, 1));
        self::assertSame(['reject', true], [$this->callbacks[0]['status'], $this->callbacks[0]['retryable']]);
        self::assertSame(2, $stuck->saves);
        self::assertSame(['A' => '{"sku":"A","v":1}', 'B' => '{"sku":"B","v":1}'], $this->objects($db), 'records 0 and 1 stand, marked');
        self::assertSame($checksum, $this->take($db, 1, self::records(), 0), 'released: the re-send is taken again');
        $next = new SavesLikePimcore($db);
        $this->handler($db, $next)(new ApplyChunk(self::ING, 1));
        self::assertSame(2, $next->saves, 'records 2 and 4; 0 and 1 were marked');
        self::assertSame(self::expected(), $this->objects($db));
        self::assertSame('ack', $this->callbacks[1]['status']);
    }

    private static function waitForFreeLock(Connection $db, string $name): void
    {
        $until = microtime(true) + 10.0;
        while ((int) $db->fetchOne('SELECT IS_FREE_LOCK(?)', [$name]) !== 1) {
            self::assertLessThan($until, microtime(true), "the named lock {$name} was not let go within 10 s");
            usleep(10_000);
        }
    }

    /**
     * A duplicate message for a chunk another worker is applying (its connection holds the chunk): this worker
     * applies nothing and sends nothing; that worker ACKs.
     *
     * @dataProvider servers
     */
    #[DataProvider('servers')]
    public function testADuplicateMessageLeavesTheChunkToTheWorkerApplyingIt(string $kind): void
    {
        $db = $this->connectWithObjects($kind);
        $this->take($db, 1, self::records(), 0);
        $other = $this->connect($kind, false);
        self::assertTrue((new Ledger($other))->claim(self::ING, 1));
        $applier = new SavesLikePimcore($db);
        $this->handler($db, $applier)(new ApplyChunk(self::ING, 1));
        self::assertSame(0, $applier->saves);
        self::assertSame([], $this->callbacks);
        $other->close();  // that worker dies: the chunk is free again
        if ($kind === 'mariadb') {
            // The server ends the closed session (and lets its named lock go) on its own thread: a claim made
            // before that still finds the chunk taken, as a redelivery racing a dying worker's disconnect would.
            self::waitForFreeLock($db, 'pimingest:' . self::ING . ':1');
        }
        $this->handler($db, $applier)(new ApplyChunk(self::ING, 1));
        self::assertSame(self::expected(), $this->objects($db));
        self::assertSame('ack', $this->callbacks[0]['status']);
    }

    /**
     * A duplicate message (the daemon's re-send of a long chunk, or a Messenger redelivery) reads the chunk as
     * queued; before it claims the chunk, the worker applying it finishes: marks the chunk applied (dropping
     * its marks) and lets the claim go. The duplicate's claim then succeeds, and it must see that the chunk
     * is applied now: it applies nothing again (a record applied twice can undo a later chunk's record of
     * its key) and leaves no marks behind; it only ACKs again. (MariaDB: the named lock is MariaDB's.)
     */
    public function testADuplicateThatClaimsAChunkJustAppliedAppliesNothingAgain(): void
    {
        $db = $this->connectWithObjects('mariadb');
        $this->take($db, 1, self::records(), 0);
        $config = new \Doctrine\DBAL\Configuration();
        $config->setMiddlewares([new BeforeGetLock()]);
        $late = \Doctrine\DBAL\DriverManager::getConnection($db->getParams(), $config);
        $first = new SavesLikePimcore($db);
        BeforeGetLock::$hook = function () use ($db, $first): void {
            $this->handler($db, $first)(new ApplyChunk(self::ING, 1));
        };
        $again = new SavesLikePimcore($late);
        try {
            $this->handler($late, $again)(new ApplyChunk(self::ING, 1));
        } finally {
            BeforeGetLock::$hook = null;
            $late->close();
        }
        self::assertNotSame(0, $first->saves);
        self::assertSame(0, $again->saves, 'the duplicate applied the chunk again');
        self::assertSame(self::expected(), $this->objects($db));
        self::assertSame('0', (string) $db->fetchOne('SELECT COUNT(*) FROM pimingest_mark'));
        self::assertSame(['ack'], array_values(array_unique(array_column($this->callbacks, 'status'))));
    }

    /**
     * A transaction open around the handler (a doctrine_transaction middleware) would nest every save again:
     * the worker refuses to run so.
     *
     * @dataProvider servers
     */
    #[DataProvider('servers')]
    public function testATransactionAroundTheHandlerIsRefused(string $kind): void
    {
        $db = $this->connectWithObjects($kind);
        $this->take($db, 1, self::records(), 0);
        $db->beginTransaction();
        try {
            $this->handler($db, new SavesLikePimcore($db))(new ApplyChunk(self::ING, 1));
            self::fail('a nested handler ran');
        } catch (\LogicException $e) {
            self::assertStringContainsString('doctrine_transaction', $e->getMessage());
        }
        self::assertFalse($db->isTransactionActive());
        self::assertSame([], $this->objects($db));
    }

    /** @return array{0: resource, 1: resource} */
    private static function pipe(): array
    {
        $pair = stream_socket_pair(\STREAM_PF_UNIX, \STREAM_SOCK_STREAM, \STREAM_IPPROTO_IP);
        self::assertIsArray($pair);

        return $pair;
    }
}
