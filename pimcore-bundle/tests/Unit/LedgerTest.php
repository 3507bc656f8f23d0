<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Tests\Unit;

use Doctrine\DBAL\Connection;
use PHPUnit\Framework\Attributes\DataProvider;
use Pimingestd\PimcoreBundle\Ledger\Ledger;
use Pimingestd\PimcoreBundle\Protocol\Manifest;
use Pimingestd\PimcoreBundle\Protocol\ProtocolError;

/**
 * Every order and dedup rule of docs/protocol.md, on SQLite and on MariaDB; the completion's checks; the
 * ledger surviving a new connection (a restart).
 */
final class LedgerTest extends Databases
{
    private const ING = '0123456789abcdef0123456789abcdef';

    /** @return array{0: string, 1: string} decision and checksum */
    private function post(Ledger $ledger, int $n, array $records, int $offset): array
    {
        [$headers, $body] = Wire::chunk(self::ING, $n, $records, $offset);
        $h = Wire::parse($headers, $body);
        $decision = $ledger->connection()->transactional(fn () => $ledger->take($h, $body, microtime(true)));

        return [$decision, $h->checksum];
    }

    private function refused(callable $fn): ProtocolError
    {
        try {
            $fn();
        } catch (ProtocolError $e) {
            return $e;
        }
        self::fail('not refused');
    }

    /** @dataProvider databases */
    #[DataProvider('databases')]
    public function testTheOrderAndDedupRules(string $kind): void
    {
        $db = $this->connect($kind);
        $ledger = new Ledger($db);
        [$d1, $c1] = $this->post($ledger, 1, [['sku' => 'A'], ['sku' => 'B']], 0);
        self::assertSame(Ledger::TAKEN, $d1);  // n = next: taken
        self::assertSame(Ledger::QUEUED, $this->post($ledger, 1, [['sku' => 'A'], ['sku' => 'B']], 0)[0]);  // not applied yet
        $ahead = $this->refused(fn () => $this->post($ledger, 3, [['sku' => 'D']], 3));
        self::assertSame([409, ['expected_chunk' => 2]], [$ahead->status, $ahead->extra]);
        $other = $this->refused(fn () => $this->post($ledger, 1, [['sku' => 'X']], 0));
        self::assertSame([409, 'checksum differs'], [$other->status, $other->error]);
        $offset = $this->refused(fn () => $this->post($ledger, 2, [['sku' => 'C']], 5));
        self::assertSame([409, 'offset differs'], [$offset->status, $offset->error]);
        $db->transactional(function () use ($ledger): void {
            self::assertSame('queued', $ledger->lockChunk(self::ING, 1)['state'] ?? null);
            $ledger->markApplied(self::ING, 1, microtime(true));
        });
        self::assertSame(Ledger::APPLIED, $this->post($ledger, 1, [['sku' => 'A'], ['sku' => 'B']], 0)[0]);  // re-ACK, no apply
        self::assertNull($ledger->connection()->transactional(fn () => $ledger->lockChunk(self::ING, 1))['body']);
        [$d2, $c2] = $this->post($ledger, 2, [['sku' => 'C']], 2);
        self::assertSame(Ledger::TAKEN, $d2);
        // A rejected chunk is released: the same chunk, re-sent, is taken afresh.
        $db->transactional(fn () => $ledger->release(self::ING, 2));
        self::assertSame(2, (int) $ledger->ingestion(self::ING)['next_chunk']);
        self::assertSame(Ledger::TAKEN, $this->post($ledger, 2, [['sku' => 'C']], 2)[0]);
        $db->transactional(fn () => $ledger->markApplied(self::ING, 2, microtime(true)));
        // The ledger is durable: a new connection (a restart) sees the same state.
        $params = $db->getParams();
        $again = new Ledger(\Doctrine\DBAL\DriverManager::getConnection($params));
        self::assertSame(Ledger::APPLIED, $this->post($again, 2, [['sku' => 'C']], 2)[0]);
        self::assertSame(409, $this->refused(fn () => $this->post($again, 4, [['sku' => 'E']], 3))->status);
        // Completion: checked against what was applied.
        $completion = ['ingestion_id' => self::ING, 'chunks' => 2, 'records' => 3, 'manifest' => Manifest::of([$c1, $c2])];
        foreach ([['chunks' => 3], ['records' => 4], ['manifest' => Manifest::of([$c2, $c1])]] as $wrong) {
            $e = $this->refused(fn () => $db->transactional(fn () => $ledger->complete($wrong + $completion, microtime(true))));
            self::assertSame([409, 'completion differs'], [$e->status, $e->error]);
        }
        $db->transactional(fn () => $ledger->complete($completion, microtime(true)));
        $db->transactional(fn () => $ledger->complete($completion, microtime(true)));  // repeated: fine
        self::assertSame('completed', $ledger->ingestion(self::ING)['status']);
        $unknown = $this->refused(fn () => $ledger->complete(['ingestion_id' => str_repeat('f', 32), 'chunks' => 1] + $completion, 0.0));
        self::assertSame(404, $unknown->status);
        $ledger->complete(['ingestion_id' => str_repeat('e', 32), 'chunks' => 0, 'records' => 0, 'manifest' => Manifest::of([])], 0.0);
        self::assertSame('completed', $ledger->ingestion(str_repeat('e', 32))['status']);  // an empty file
    }

    /**
     * The shared vectors' arrival sequences (v1, v2 strict, v2 by_key): each POST gets the vector's answer,
     * each chunk taken is applied before the next POST, and a duplicate is answered without a second take.
     *
     * @dataProvider databases
     */
    #[DataProvider('databases')]
    public function testV2ArrivalsMatchTheSharedVectors(string $kind): void
    {
        $db = $this->connect($kind);
        $ledger = new Ledger($db);
        $vectors = json_decode((string) file_get_contents(\dirname(__DIR__, 3) . '/tests/vectors/protocol-v1.json'), true, 32, \JSON_THROW_ON_ERROR);
        foreach ($vectors['v2_arrivals']['cases'] as $i => $case) {
            $ing = sprintf('%032x', $i + 1);
            foreach ($case['steps'] as $step) {
                $n = $step['chunk'];
                $records = array_map(static fn (int $k): array => ['i' => 10 * ($n - 1) + $k, 'n' => $n, 'v' => $step['variant']], range(0, 9));
                [$headers, $body] = Wire::chunk($ing, $n, $records, 10 * ($n - 1));
                if ($case['protocol'] === 2) {
                    $headers += ['pimingest-protocol' => '2', 'pimingest-window' => '8', 'pimingest-order' => $case['order']];
                }
                $h = Wire::parse($headers, $body);
                try {
                    $decision = $db->transactional(fn () => $ledger->take($h, $body, microtime(true)));
                } catch (ProtocolError $e) {
                    self::assertSame($step['answer'], $e->status, "{$case['about']}: chunk {$n}: {$e->getMessage()}");
                    continue;
                }
                self::assertSame(202, $step['answer'], "{$case['about']}: chunk {$n} was taken ({$decision})");
                self::assertSame(($step['duplicate'] ?? false) ? Ledger::APPLIED : Ledger::TAKEN, $decision, "{$case['about']}: chunk {$n}");
                if ($decision === Ledger::TAKEN) {
                    $db->transactional(fn () => $ledger->markApplied($ing, $n, microtime(true)));
                }
            }
        }
    }

    /** @dataProvider databases */
    #[DataProvider('databases')]
    public function testSetupIsIdempotent(string $kind): void
    {
        $ledger = new Ledger($this->connect($kind));
        self::assertSame([], $ledger->setup());
    }
}
