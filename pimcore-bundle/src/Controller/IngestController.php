<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Controller;

use Doctrine\DBAL\Exception\RetryableException;
use Pimingestd\PimcoreBundle\Ack\AckSender;
use Pimingestd\PimcoreBundle\Ledger\Ledger;
use Pimingestd\PimcoreBundle\Messenger\ApplyChunk;
use Pimingestd\PimcoreBundle\Protocol\ChunkHeaders;
use Pimingestd\PimcoreBundle\Protocol\ProtocolError;
use Pimingestd\PimcoreBundle\Protocol\Signature;
use Psr\Log\LoggerInterface;
use Symfony\Component\HttpFoundation\JsonResponse;
use Symfony\Component\HttpFoundation\Request;
use Symfony\Component\Messenger\MessageBusInterface;

/**
 * `POST {prefix}/chunks` and `POST {prefix}/complete`, by docs/protocol.md's "What PIM-Core must do".
 *
 * A chunk is decided by the ledger and, when taken, queued for the worker in the same transaction
 * (the Doctrine transport writes to the same database), then answered 202 at once: the ACK follows from
 * the worker once the records are applied.
 *
 * A lock the answer has to wait for too long (a worker applying, or an admin's save: SQLite's "database is
 * locked", MariaDB's lock wait timeout or deadlock, DBAL's RetryableException) is a busy receiver, not a
 * failure: 503 with Retry-After, which the daemon honours by pausing its sends and trying again (protocol:
 * "Answers"), and one log line. Nothing of the request was kept: its transaction was rolled back.
 */
final class IngestController
{
    /** Seconds the daemon waits after a 503 before it sends again. */
    public const RETRY_AFTER = 1;

    public function __construct(
        private readonly Ledger $ledger,
        private readonly MessageBusInterface $bus,
        private readonly AckSender $acks,
        private readonly string $secret,
        private readonly LoggerInterface $logger,
        private readonly int $window = 4,
    ) {
    }

    /** Every chunk answer announces the window (protocol v2): a v1 daemon ignores the header. */
    public function chunk(Request $request): JsonResponse
    {
        $response = $this->decide($request);
        $response->headers->set('Pimingest-Window', (string) $this->window);

        return $response;
    }

    private function decide(Request $request): JsonResponse
    {
        $body = $request->getContent();
        try {
            $h = ChunkHeaders::parse(static fn (string $name): ?string => $request->headers->get($name), $body, $this->secret, time());
            if ($h->callback !== $this->acks->callbackUrl()) {
                throw new ProtocolError(400, 'callback not allowed', 'Pimingest-Callback is not the callback URL this bundle is configured with');
            }
            $db = $this->ledger->connection();
            $decision = $db->transactional(function () use ($h, $body): string {
                $decision = $this->ledger->take($h, $body, microtime(true));
                // Taken: apply it. A duplicate: the worker ACKs it again once applied (a message for it may
                // have been used up by a failed attempt; the handler is idempotent under the row lock).
                $this->bus->dispatch(new ApplyChunk($h->ingestionId, $h->n));

                return $decision;
            });
        } catch (ProtocolError $e) {
            $this->logger->notice('pimingest: chunk refused', ['status' => $e->status, 'error' => $e->getMessage()]);

            return new JsonResponse($e->body(), $e->status);
        } catch (RetryableException $e) {
            return $this->busy('chunk', $e, ['ingestion' => $h->ingestionId, 'chunk' => $h->n]);
        }
        $this->logger->info('pimingest: chunk ' . $decision, ['ingestion' => $h->ingestionId, 'chunk' => $h->n, 'records' => $h->records]);

        return new JsonResponse(['result' => $decision], 202);
    }

    public function complete(Request $request): JsonResponse
    {
        $body = $request->getContent();
        try {
            $data = json_decode($body, true, 16, \JSON_THROW_ON_ERROR);
            if (!\is_array($data) || !\is_string($data['ingestion_id'] ?? null)) {
                throw new ProtocolError(400, 'bad body', 'a completion is a JSON object with ingestion_id');
            }
            if ($this->secret !== '') {
                Signature::verify($this->secret, $request->headers->get(Signature::HEADER), $body, time(), $data['ingestion_id'] . ':complete');
            }
            $this->ledger->connection()->transactional(fn () => $this->ledger->complete($data, microtime(true)));
        } catch (\JsonException) {
            return new JsonResponse(['error' => 'bad body', 'detail' => 'not JSON'], 400);
        } catch (ProtocolError $e) {
            $this->logger->notice('pimingest: completion refused', ['status' => $e->status, 'error' => $e->getMessage()]);

            return new JsonResponse($e->body(), $e->status);
        } catch (RetryableException $e) {
            return $this->busy('completion', $e, ['ingestion' => $data['ingestion_id']]);
        }
        $this->logger->info('pimingest: ingestion completed', ['ingestion' => $data['ingestion_id'], 'chunks' => $data['chunks'] ?? null]);

        return new JsonResponse(['result' => 'completed'], 200);
    }

    /** @param array<string, mixed> $context */
    private function busy(string $what, RetryableException $e, array $context): JsonResponse
    {
        $this->logger->warning("pimingest: {$what} answered 503, the database is busy (" . $e::class . '); the daemon retries', $context);

        return new JsonResponse(
            ['error' => 'busy', 'detail' => 'the database is busy (a lock wait); send again after Retry-After'],
            503,
            ['Retry-After' => (string) self::RETRY_AFTER],
        );
    }
}
