<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Tests\Unit;

use Doctrine\DBAL\Connection;
use PHPUnit\Framework\Attributes\DataProvider;
use Pimingestd\PimcoreBundle\Ack\AckSender;
use Pimingestd\PimcoreBundle\Controller\IngestController;
use Pimingestd\PimcoreBundle\Ledger\Ledger;
use Pimingestd\PimcoreBundle\Ledger\Schema;
use Pimingestd\PimcoreBundle\Protocol\Manifest;
use Psr\Log\AbstractLogger;
use Symfony\Component\HttpClient\MockHttpClient;
use Symfony\Component\HttpFoundation\Request;
use Symfony\Component\Messenger\Envelope;
use Symfony\Component\Messenger\MessageBusInterface;

/**
 * A chunk or a completion that has to wait too long for a lock another connection holds (a worker applying,
 * an admin saving) is answered 503 with Retry-After, which the daemon retries without counting a failed
 * attempt, and logged in one line; it was a 500. Real locks: a second connection holds them.
 */
final class ControllerTest extends Databases
{
    private const ING = '0123456789abcdef0123456789abcdef';

    /** @var list<array{string, string}> level and message */
    private array $logged = [];

    private function controller(Connection $db): IngestController
    {
        $logger = new class ($this->logged) extends AbstractLogger {
            /** @param list<array{string, string}> $log */
            public function __construct(private array &$log)
            {
            }

            public function log($level, $message, array $context = []): void  // psr/log 1 (bookworm) to 3
            {
                $this->log[] = [(string) $level, (string) $message];
            }
        };
        $bus = new class () implements MessageBusInterface {
            public function dispatch(object $message, array $stamps = []): Envelope
            {
                return new Envelope($message);
            }
        };
        $acks = new AckSender(new MockHttpClient(), Wire::CALLBACK, '', $logger, 1, 0.0);

        return new IngestController(new Ledger($db), $bus, $acks, '', $logger);
    }

    /** @param array<string, string> $headers */
    private static function request(string $path, array $headers, string $body): Request
    {
        $server = [];
        foreach ($headers as $name => $value) {
            $server['HTTP_' . strtoupper(str_replace('-', '_', $name))] = $value;
        }

        return Request::create($path, 'POST', [], [], [], $server, $body);
    }

    /** The controller's connection gives up on a lock after about a second; `$other` takes the locks. */
    private function lockedPair(string $kind): array
    {
        $db = $this->connect($kind);
        $other = $this->connect($kind, fresh: false);
        if ($kind === 'sqlite') {
            $db->executeStatement('PRAGMA busy_timeout = 300');
        } else {
            $db->executeStatement('SET SESSION innodb_lock_wait_timeout = 1');
        }

        return [$db, $other];
    }

    /**
     * @dataProvider databases
     */
    #[DataProvider('databases')]
    public function testAChunkWaitingTooLongForALockIsA503WithRetryAfter(string $kind): void
    {
        [$db, $other] = $this->lockedPair($kind);
        $controller = $this->controller($db);
        [$h1, $b1] = Wire::chunk(self::ING, 1, [['sku' => 'A']], 0);
        self::assertSame(202, $controller->chunk(self::request('/pimingest/chunks', $h1, $b1))->getStatusCode());

        $other->beginTransaction();  // a worker applying chunk 1 holds the ingestion's row
        $other->executeStatement('UPDATE ' . Schema::INGESTION . ' SET updated_at = updated_at + 1 WHERE ingestion_id = ?', [self::ING]);
        $this->logged = [];
        [$h2, $b2] = Wire::chunk(self::ING, 2, [['sku' => 'B']], 1);
        $busy = $controller->chunk(self::request('/pimingest/chunks', $h2, $b2));
        self::assertSame(503, $busy->getStatusCode());
        self::assertSame((string) IngestController::RETRY_AFTER, $busy->headers->get('Retry-After'));
        self::assertSame('busy', json_decode((string) $busy->getContent(), true)['error']);
        self::assertCount(1, $this->logged);
        self::assertSame('warning', $this->logged[0][0]);
        self::assertStringContainsString('503', $this->logged[0][1]);
        $other->rollBack();

        // Nothing of the refused request was kept: sent again once the lock is gone, it is taken.
        $again = $controller->chunk(self::request('/pimingest/chunks', $h2, $b2));
        self::assertSame([202, 'taken'], [$again->getStatusCode(), json_decode((string) $again->getContent(), true)['result']]);
    }

    /**
     * @dataProvider databases
     */
    #[DataProvider('databases')]
    public function testACompletionWaitingTooLongForALockIsA503WithRetryAfter(string $kind): void
    {
        [$db, $other] = $this->lockedPair($kind);
        $controller = $this->controller($db);
        [$h1, $b1] = Wire::chunk(self::ING, 1, [['sku' => 'A']], 0);
        self::assertSame(202, $controller->chunk(self::request('/pimingest/chunks', $h1, $b1))->getStatusCode());
        $ledger = new Ledger($db);
        $db->transactional(function () use ($ledger): void {
            $ledger->lockChunk(self::ING, 1);
            $ledger->markApplied(self::ING, 1, microtime(true));
        });
        $completion = json_encode([
            'ingestion_id' => self::ING, 'chunks' => 1, 'records' => 1,
            'manifest' => Manifest::of([Wire::parse($h1, $b1)->checksum]),
        ], \JSON_THROW_ON_ERROR);
        $other->beginTransaction();
        $other->executeStatement('UPDATE ' . Schema::INGESTION . ' SET updated_at = updated_at + 1 WHERE ingestion_id = ?', [self::ING]);
        $this->logged = [];
        $busy = $controller->complete(self::request('/pimingest/complete', [], $completion));
        self::assertSame(503, $busy->getStatusCode());
        self::assertSame((string) IngestController::RETRY_AFTER, $busy->headers->get('Retry-After'));
        self::assertCount(1, $this->logged);
        $other->rollBack();
        self::assertSame(200, $controller->complete(self::request('/pimingest/complete', [], $completion))->getStatusCode());
    }
}
