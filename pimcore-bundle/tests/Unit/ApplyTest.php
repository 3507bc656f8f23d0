<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Tests\Unit;

use Doctrine\DBAL\Connection;
use Doctrine\DBAL\Exception\DeadlockException;
use PHPUnit\Framework\Attributes\DataProvider;
use Pimingestd\PimcoreBundle\Ack\AckSender;
use Pimingestd\PimcoreBundle\Apply\ApplierInterface;
use Pimingestd\PimcoreBundle\Apply\ApplierRegistry;
use Pimingestd\PimcoreBundle\Apply\Chunk;
use Pimingestd\PimcoreBundle\Apply\RecordRejected;
use Pimingestd\PimcoreBundle\Apply\TableApplier;
use Pimingestd\PimcoreBundle\Controller\IngestController;
use Pimingestd\PimcoreBundle\Ledger\Ledger;
use Pimingestd\PimcoreBundle\Messenger\ApplyChunk;
use Pimingestd\PimcoreBundle\Messenger\ApplyChunkHandler;
use Psr\Log\NullLogger;
use Symfony\Component\DependencyInjection\ServiceLocator;
use Symfony\Component\HttpClient\MockHttpClient;
use Symfony\Component\HttpClient\Response\MockResponse;
use Symfony\Component\HttpFoundation\Request;
use Symfony\Component\Messenger\Envelope;
use Symfony\Component\Messenger\MessageBusInterface;

/**
 * The worker's transaction (records and the ledger's mark together, or neither), exact records in
 * pimingest_record, rejects that name the record, retryable database errors, and the callback allowlist.
 * The daemon's side of the callback is a recording HTTP client here; tests/test_pimcore_bundle.py runs the
 * real daemon against the real app.
 */
final class ApplyTest extends Databases
{
    private const ING = '0123456789abcdef0123456789abcdef';

    /** @var list<array<string, mixed>> */
    private array $callbacks = [];

    private function acks(): AckSender
    {
        $client = new MockHttpClient(function (string $method, string $url, array $options): MockResponse {
            $this->callbacks[] = ['url' => $url] + json_decode($options['body'], true);

            return new MockResponse('{"result":"accepted"}', ['http_code' => 200]);
        });

        return new AckSender($client, Wire::CALLBACK, '', new NullLogger(), 2, 0.0);
    }

    private function handler(Connection $db, ?ApplierInterface $applier = null): ApplyChunkHandler
    {
        $custom = new ServiceLocator($applier === null ? [] : ['custom' => fn () => $applier]);
        $registry = new ApplierRegistry([], $applier === null ? 'table' : 'custom', $custom, new TableApplier($db));

        return new ApplyChunkHandler(new Ledger($db), $registry, $this->acks(), new NullLogger());
    }

    /** @param list<string> $records */
    private function take(Connection $db, int $n, array $records, int $offset): string
    {
        [$headers, $body] = Wire::chunk(self::ING, $n, $records, $offset);
        $h = Wire::parse($headers, $body);
        $ledger = new Ledger($db);
        $db->transactional(fn () => $ledger->take($h, $body, microtime(true)));

        return $h->checksum;
    }

    /** @return list<string> */
    private function stored(Connection $db): array
    {
        return array_map('strval', $db->fetchFirstColumn('SELECT data FROM pimingest_record ORDER BY position'));
    }

    /** @dataProvider databases */
    #[DataProvider('databases')]
    public function testRecordsArriveExactlyAndOnlyOnce(string $kind): void
    {
        $db = $this->connect($kind);
        $records = ['{"price":9.50,"sku":"A-1"}', '{"big":123456789012345678901234567890,"e":1.5E-300}', '{"a":"é \"q\" , ] }","b":[true,null]}'];
        $checksum = $this->take($db, 1, $records, 0);
        $handler = $this->handler($db);
        $handler(new ApplyChunk(self::ING, 1));
        self::assertSame($records, $this->stored($db));
        self::assertSame([['url' => Wire::CALLBACK, 'ingestion_id' => self::ING, 'chunk' => 1, 'checksum' => $checksum, 'status' => 'ack']], $this->callbacks);
        $handler(new ApplyChunk(self::ING, 1));  // delivered again (a crash after the commit): ACK again, apply nothing
        self::assertSame($records, $this->stored($db));
        self::assertCount(2, $this->callbacks);
        self::assertSame('ack', $this->callbacks[1]['status']);
        $positions = array_map('intval', $db->fetchFirstColumn('SELECT position FROM pimingest_record ORDER BY position'));
        self::assertSame([0, 1, 2], $positions);
    }

    /** @dataProvider databases */
    #[DataProvider('databases')]
    public function testAFailureAfterSomeSavesLeavesNothingAndRejectsNamingTheRecord(string $kind): void
    {
        $db = $this->connect($kind);
        $table = new TableApplier($db);
        $failing = new class($table) implements ApplierInterface {
            public function __construct(private readonly TableApplier $table)
            {
            }

            public function apply(Chunk $chunk): void
            {
                $this->table->apply(new Chunk($chunk->ingestionId, $chunk->n, $chunk->firstRecord, null, \array_slice($chunk->records, 0, 2)));
                throw new RecordRejected($chunk->firstRecord + 2, 'price', 'must be positive');
            }
        };
        $this->take($db, 1, ['{"sku":"A"}', '{"sku":"B"}'], 0);
        $this->handler($db)(new ApplyChunk(self::ING, 1));
        $checksum = $this->take($db, 2, ['{"sku":"C"}', '{"sku":"D"}', '{"price":-1,"sku":"E"}'], 2);
        $this->handler($db, $failing)(new ApplyChunk(self::ING, 2));
        self::assertSame(['{"sku":"A"}', '{"sku":"B"}'], $this->stored($db));  // chunk 2's two saves were rolled back
        $reject = $this->callbacks[1];
        self::assertSame(['reject', 2, $checksum, false], [$reject['status'], $reject['chunk'], $reject['checksum'], $reject['retryable']]);
        self::assertSame('record 4, field price: must be positive', $reject['reason']);
        $ledger = new Ledger($db);
        self::assertSame(2, (int) $ledger->ingestion(self::ING)['next_chunk']);  // released: a re-send is applied afresh
        self::assertSame(Ledger::TAKEN, $db->transactional(function () use ($ledger) {
            [$h, $b] = Wire::chunk(self::ING, 2, ['{"sku":"C"}', '{"sku":"D"}', '{"price":1,"sku":"E"}'], 2);

            return $ledger->take(Wire::parse($h, $b), $b, microtime(true));
        }));
    }

    /**
     * Protocol v1.1: a record refused inside Chunk::each() is undone by its savepoint alone; the chunk's other
     * records commit, the ACK lists it, every re-ACK lists it again, and the completion's counts are checked.
     *
     * @dataProvider databases
     */
    #[DataProvider('databases')]
    public function testARefusedRecordIsUndoneAloneAndListedInEveryAck(string $kind): void
    {
        $db = $this->connect($kind);
        $picky = new class($db) implements ApplierInterface {
            public function __construct(private readonly Connection $db)
            {
            }

            public function apply(Chunk $chunk): void
            {
                $chunk->each(function (int $i, string $text) use ($chunk): void {
                    $this->db->insert('pimingest_record', ['ingestion_id' => $chunk->ingestionId, 'chunk' => $chunk->n, 'position' => $chunk->firstRecord + $i, 'data' => $text]);
                    if (str_contains($text, '"E"')) {
                        throw new RecordRejected($chunk->firstRecord + $i, 'sku', 'unknown category');
                    }
                });
            }
        };
        $records = ['{"sku":"C"}', '{"sku":"E"}', '{"_deleted":true,"sku":"Z"}'];
        $checksum = $this->take($db, 1, $records, 0);
        $handler = $this->handler($db, $picky);
        $handler(new ApplyChunk(self::ING, 1));
        self::assertSame(['{"sku":"C"}', '{"_deleted":true,"sku":"Z"}'], $this->stored($db));  // E's insert was undone
        $listed = [['index' => 1, 'reason' => 'unknown category', 'field' => 'sku']];
        self::assertSame(['ack', $checksum, $listed], [$this->callbacks[0]['status'], $this->callbacks[0]['checksum'], $this->callbacks[0]['rejected']]);
        $handler(new ApplyChunk(self::ING, 1));  // delivered again: the re-ACK lists the same record
        self::assertSame($listed, $this->callbacks[1]['rejected']);
        self::assertSame(['{"sku":"C"}', '{"_deleted":true,"sku":"Z"}'], $this->stored($db));
        $ledger = new Ledger($db);
        $completion = ['ingestion_id' => self::ING, 'chunks' => 1, 'records' => 2, 'rejected' => 1, 'deleted' => 1, 'manifest' => \Pimingestd\PimcoreBundle\Protocol\Manifest::of([$checksum])];
        foreach ([['rejected' => 0], ['deleted' => 0], ['records' => 3]] as $wrong) {
            try {
                $db->transactional(fn () => $ledger->complete($wrong + $completion, microtime(true)));
                self::fail('a completion with wrong v1.1 counts was taken: ' . json_encode($wrong));
            } catch (\Pimingestd\PimcoreBundle\Protocol\ProtocolError $e) {
                self::assertSame(409, $e->status);
            }
        }
        $db->transactional(fn () => $ledger->complete($completion, microtime(true)));
        self::assertSame('completed', $ledger->ingestion(self::ING)['status']);
    }

    /** @dataProvider databases */
    #[DataProvider('databases')]
    public function testADeadlockIsARetryableReject(string $kind): void
    {
        $db = $this->connect($kind);
        $deadlocking = new class() implements ApplierInterface {
            public function apply(Chunk $chunk): void
            {
                throw new DeadlockException(\Doctrine\DBAL\Driver\PDO\Exception::new(new \PDOException('Deadlock found when trying to get lock')), null);
            }
        };
        $this->take($db, 1, ['{"sku":"A"}'], 0);
        $this->handler($db, $deadlocking)(new ApplyChunk(self::ING, 1));
        self::assertSame(['reject', true], [$this->callbacks[0]['status'], $this->callbacks[0]['retryable']]);
        self::assertStringContainsString('deadlock or lock timeout', $this->callbacks[0]['reason']);
        self::assertSame([], $this->stored($db));
    }

    /** @dataProvider databases */
    #[DataProvider('databases')]
    public function testAChunkNamingAnotherCallbackIsRefusedAndNothingIsTaken(string $kind): void
    {
        $db = $this->connect($kind);
        $dispatched = [];
        $bus = new class($dispatched) implements MessageBusInterface {
            public function __construct(private array &$log)
            {
            }

            public function dispatch(object $message, array $stamps = []): Envelope
            {
                $this->log[] = $message;

                return new Envelope($message);
            }
        };
        $controller = new IngestController(new Ledger($db), $bus, $this->acks(), '', new NullLogger());
        [$headers, $body] = Wire::chunk(self::ING, 1, ['{"sku":"A"}'], 0);
        $evil = $headers;
        $evil['pimingest-callback'] = 'http://169.254.169.254/latest/meta-data';
        $answer = $controller->chunk($this->request($evil, $body));
        self::assertSame(400, $answer->getStatusCode());
        self::assertSame('4', $answer->headers->get('Pimingest-Window'));  // every chunk answer announces it (v2)
        self::assertStringContainsString('callback not allowed', (string) $answer->getContent());
        self::assertNull((new Ledger($db))->ingestion(self::ING));
        self::assertSame([], $dispatched);
        $answer = $controller->chunk($this->request($headers, $body));
        self::assertSame(202, $answer->getStatusCode());
        self::assertCount(1, $dispatched);
        self::assertSame(409, $controller->chunk($this->request(...Wire::chunk(self::ING, 3, ['{"x":1}'], 1)))->getStatusCode());
    }

    /**
     * v2 by_key: two chunks taken out of order are applied by two workers at once. The first worker's
     * transaction is still open when the second one applies its chunk: it does not wait for the first (only
     * the chunk's own row is locked). Both ACK, and the completion takes them in chunk order. (MariaDB only:
     * SQLite has one writer at a time.)
     *
     * @dataProvider servers
     */
    #[DataProvider('servers')]
    public function testByKeyChunksAreAppliedByWorkersInParallel(string $kind): void
    {
        $first = $this->connect($kind);
        $ledger = new Ledger($first);
        $v2 = ['pimingest-protocol' => '2', 'pimingest-window' => '8', 'pimingest-order' => 'by_key'];
        $sums = [];
        foreach ([2 => ['{"sku":"B"}'], 1 => ['{"sku":"A"}']] as $n => $records) {
            [$headers, $body] = Wire::chunk(self::ING, $n, $records, $n - 1);
            $h = Wire::parse($headers + $v2, $body);
            self::assertSame(Ledger::TAKEN, $first->transactional(fn () => $ledger->take($h, $body, microtime(true))));
            $sums[$n] = $h->checksum;
        }
        $second = $this->connect($kind, fresh: false);
        $first->beginTransaction();
        self::assertSame('queued', $ledger->lockChunk(self::ING, 2, false)['state'] ?? null);  // worker 1 holds chunk 2
        $second->executeStatement('SET SESSION innodb_lock_wait_timeout = 2');
        $this->handler($second)(new ApplyChunk(self::ING, 1));  // worker 2 applies chunk 1 meanwhile
        $first->rollBack();
        $this->handler($first)(new ApplyChunk(self::ING, 2));
        self::assertSame(['ack', 'ack'], array_column($this->callbacks, 'status'));
        self::assertSame([1, 2], array_column($this->callbacks, 'chunk'));
        $first->transactional(fn () => $ledger->complete(
            ['ingestion_id' => self::ING, 'chunks' => 2, 'records' => 2, 'manifest' => \Pimingestd\PimcoreBundle\Protocol\Manifest::of([$sums[1], $sums[2]])],
            microtime(true),
        ));
        self::assertSame('completed', $ledger->ingestion(self::ING)['status']);
    }

    /** @param array<string, string> $headers */
    private function request(array $headers, string $body): Request
    {
        $server = [];
        foreach ($headers as $name => $value) {
            $server['HTTP_' . strtoupper(str_replace('-', '_', $name))] = $value;
        }

        return Request::create('/pimingest/chunks', 'POST', [], [], [], $server, $body);
    }
}
