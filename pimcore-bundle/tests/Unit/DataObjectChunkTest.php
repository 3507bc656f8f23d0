<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Tests\Unit;

use Pimcore\Event\DataObjectEvents;
use Pimcore\Model\DataObject\Product;
use Pimcore\Model\Factory;
use Pimingestd\PimcoreBundle\Ack\AckSender;
use Pimingestd\PimcoreBundle\Apply\ApplierRegistry;
use Pimingestd\PimcoreBundle\Apply\TableApplier;
use Pimingestd\PimcoreBundle\Ledger\Ledger;
use Pimingestd\PimcoreBundle\Messenger\ApplyChunk;
use Pimingestd\PimcoreBundle\Messenger\ApplyChunkHandler;
use Pimingestd\PimcoreBundle\Tests\Stubs\ReverseLocker;
use Pimingestd\PimcoreBundle\Tests\Unit\Stubs\StandInTestCase;
use Psr\Log\NullLogger;
use Symfony\Component\DependencyInjection\ServiceLocator;
use Symfony\Component\HttpClient\MockHttpClient;
use Symfony\Component\HttpClient\Response\MockResponse;

/**
 * The worker with the data_object applier on the Pimcore stand-ins (their save() opens its own transaction
 * on the shared connection and retries a deadlock): a record Pimcore refuses never blocks its chunk, a real
 * deadlock from a second connection is retried inside the save and the record is marked, and a worker
 * killed right after a save is followed by a redelivery that does not save that record again.
 */
final class DataObjectChunkTest extends StandInTestCase
{
    private const ING = '00112233445566778899aabbccddeeff';

    /** @var list<array<string, mixed>> */
    private array $callbacks = [];

    protected function setUp(): void
    {
        parent::setUp();
        foreach (['pimingest_mark', 'pimingest_record', 'pimingest_chunk', 'pimingest_ingestion'] as $table) {
            $this->db->executeStatement("DROP TABLE IF EXISTS {$table}");
        }
        (new Ledger($this->db))->setup();
    }

    private function handler(): ApplyChunkHandler
    {
        $acks = new AckSender(new MockHttpClient(function (string $method, string $url, array $options): MockResponse {
            $this->callbacks[] = json_decode($options['body'], true);

            return new MockResponse('{"result":"accepted"}', ['http_code' => 200]);
        }), Wire::CALLBACK, '', new NullLogger(), 2, 0.0);
        $rules = [['match' => '*', 'applier' => 'data_object', 'options' => [
            'class' => 'Product', 'key' => 'sku', 'folder' => '/Products',
            'fields' => ['title' => ['field' => 'name', 'type' => 'localized', 'language' => 'de'], 'ean' => ['type' => 'string'], 'stock' => ['type' => 'number']],
        ]]];
        $registry = new ApplierRegistry($rules, 'table', new ServiceLocator([]), new TableApplier($this->db), Factory::instance());

        return new ApplyChunkHandler(new Ledger($this->db), $registry, $acks, new NullLogger());
    }

    /** @param list<array<string, mixed>> $records */
    private function take(array $records): string
    {
        [$headers, $body] = Wire::chunk(self::ING, 1, $records, 0, '', 'products.jsonl');
        $h = Wire::parse($headers, $body);
        $ledger = new Ledger($this->db);
        self::assertSame(Ledger::TAKEN, $this->db->transactional(fn () => $ledger->take($h, $body, microtime(true))));

        return $h->checksum;
    }

    /** @return array<string, array{?string, ?int}> sku => [ean, stock], as the database holds them */
    private function products(): array
    {
        $out = [];
        foreach ($this->other()->fetchAllAssociative('SELECT sku, ean, stock FROM object_prod ORDER BY sku') as $row) {
            $out[(string) $row['sku']] = [$row['ean'], $row['stock'] === null ? null : (int) $row['stock']];
        }

        return $out;
    }

    /**
     * Issue 26, item 1: a record Pimcore's validation refuses (inside save()'s own transaction: an Input
     * longer than its column) is listed in
     * the ACK and the chunk's other records commit; before, the chunk's transaction became rollback-only
     * and the chunk was never ACKed.
     */
    public function testARecordPimcoreRefusesNeverBlocksItsChunk(): void
    {
        $checksum = $this->take([['sku' => 'A', 'title' => 'a'], ['sku' => 'B', 'ean' => str_repeat('4', 20)], ['sku' => 'C', 'title' => 'c']]);
        $this->handler()(new ApplyChunk(self::ING, 1));
        self::assertSame(['A' => [null, null], 'C' => [null, null]], $this->products());
        self::assertCount(1, $this->callbacks);
        self::assertSame(['ack', $checksum], [$this->callbacks[0]['status'], $this->callbacks[0]['checksum']]);
        self::assertSame([1], array_column($this->callbacks[0]['rejected'], 'index'));
        self::assertSame('ean', $this->callbacks[0]['rejected'][0]['field']);
        self::assertStringContainsString('Value in field [ ean ] is longer than 13 characters', $this->callbacks[0]['rejected'][0]['reason']);
        self::assertSame(0, $this->db->getTransactionNestingLevel());
    }

    /**
     * Issue 26, item 2: a second connection locks the rows of a save in the reverse order; InnoDB makes
     * the save its victim and Pimcore's retry loop (not nested now) saves it again. Every record ends saved
     * and marked, the chunk applied and ACKed once, and the save's events fired once.
     */
    public function testARealDeadlockInAPimcoreSaveIsRetriedByPimcoreAndTheChunkCompletes(): void
    {
        $p = $this->product('P', 'P');
        $id = $p->getId();
        $this->take([['sku' => 'P', 'ean' => 'MINE'], ['sku' => 'Q', 'stock' => 1]]);
        $this->events = [];
        $locker = ReverseLocker::start(self::url(), ["UPDATE object_store_prod SET ean = 'OTHER' WHERE oo_id = {$id}"], "SELECT id FROM objects WHERE id = {$id} FOR UPDATE");
        $this->handler()(new ApplyChunk(self::ING, 1));
        self::assertSame('committed', $locker->finish(), 'the save was the victim');
        self::assertSame(['P' => ['MINE', null], 'Q' => [null, 1]], $this->products());
        self::assertSame('ack', $this->callbacks[0]['status'] ?? null);
        self::assertSame('applied', $this->db->fetchOne('SELECT state FROM pimingest_chunk'));
        self::assertSame(0, (int) $this->db->fetchOne('SELECT COUNT(*) FROM pimingest_mark'));
        self::assertSame(1, $this->events[DataObjectEvents::POST_UPDATE] ?? 0);
        self::assertSame(1, $this->events[DataObjectEvents::POST_ADD] ?? 0);
    }

    /**
     * A worker killed right after a save committed, before its mark: the redelivered chunk finds the
     * object already holding that record, so it is not saved again (its events do not fire twice), and
     * the chunk completes with the other records once each.
     */
    public function testAWorkerKilledBetweenASaveAndItsMarkDoesNotSaveThatRecordTwice(): void
    {
        $this->take([['sku' => 'A', 'stock' => 1], ['sku' => 'B', 'stock' => 2], ['sku' => 'A', 'stock' => 3]]);
        $kill = static function ($event): void {
            if ($event->getObject() instanceof Product && $event->getObject()->getSku() === 'B') {
                throw new Killed('SIGKILL after the save of B');
            }
        };
        \Pimcore::getEventDispatcher()->addListener(DataObjectEvents::POST_ADD, $kill);
        try {
            $this->handler()(new ApplyChunk(self::ING, 1));
            self::fail('the worker was to die');
        } catch (Killed) {
        }
        \Pimcore::getEventDispatcher()->removeListener(DataObjectEvents::POST_ADD, $kill);
        self::assertSame([], $this->callbacks);
        self::assertSame(['A' => [null, 1], 'B' => [null, 2]], $this->products(), 'B saved, not marked');
        $this->events = [];
        $this->handler()(new ApplyChunk(self::ING, 1));
        self::assertSame(['A' => [null, 3], 'B' => [null, 2]], $this->products());
        self::assertSame([DataObjectEvents::PRE_UPDATE => 1, DataObjectEvents::POST_UPDATE => 1], array_intersect_key($this->events, [DataObjectEvents::PRE_UPDATE => 0, DataObjectEvents::POST_UPDATE => 0]));
        self::assertArrayNotHasKey(DataObjectEvents::POST_ADD, $this->events, 'B was not saved again');
        self::assertSame('ack', $this->callbacks[0]['status'] ?? null);
    }

    /**
     * Issue 26, item 7: every Pimcore save clears a cache tag, a `cache_items` row on the shared connection.
     * No transaction is held across the chunk, so between two records an admin's save (another connection)
     * takes that row at once; before, the chunk's transaction held it until the whole chunk committed.
     */
    public function testAnAdminSaveIsNotHeldUpByAChunkBeingApplied(): void
    {
        $this->product('P', 'P');
        $this->take([['sku' => 'A', 'stock' => 1], ['sku' => 'B', 'stock' => 2]]);
        $admin = $this->other();
        $admin->executeStatement('SET SESSION innodb_lock_wait_timeout = 1');
        $tag = "pimcore\0tags\0object_properties";
        $took = [];
        $between = function ($event) use ($admin, $tag, &$took): void {
            if ($event->getObject() instanceof Product && $event->getObject()->getSku() === 'A') {
                // The admin's save, while the worker is between record 0 and record 1 of the chunk.
                $took[] = $admin->executeStatement('UPDATE cache_items SET item_time = item_time + 1 WHERE item_id = ?', [$tag]);
                $took[] = $admin->executeStatement("UPDATE object_store_prod s JOIN objects o ON o.id = s.oo_id SET s.ean = 'ADMIN' WHERE o.`key` = 'P'");
            }
        };
        \Pimcore::getEventDispatcher()->addListener(DataObjectEvents::POST_ADD, $between);
        $this->handler()(new ApplyChunk(self::ING, 1));
        self::assertSame([1, 1], $took, 'the admin saved without waiting');
        self::assertSame(['A' => [null, 1], 'B' => [null, 2], 'P' => ['ADMIN', null]], $this->products());
        self::assertSame('ack', $this->callbacks[0]['status'] ?? null);
    }
}
