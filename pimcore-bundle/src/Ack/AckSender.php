<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Ack;

use Pimingestd\PimcoreBundle\Protocol\Signature;
use Psr\Log\LoggerInterface;
use Symfony\Contracts\HttpClient\Exception\TransportExceptionInterface;
use Symfony\Contracts\HttpClient\HttpClientInterface;

/**
 * The signed ACK (or reject) callback to the daemon, at the configured URL only. 5xx, 408, 429 and
 * transport errors are retried with exponential backoff; a 4xx other than those is final (the daemon
 * says why, and a lost ACK is harmless: the daemon re-sends the chunk and it is re-ACKed).
 */
final class AckSender
{
    public function __construct(
        private readonly HttpClientInterface $http,
        private readonly string $callbackUrl,
        private readonly string $secret,
        private readonly LoggerInterface $logger,
        private readonly int $attempts = 6,
        private readonly float $backoff = 0.5,
        private readonly float $timeout = 10.0,
    ) {
    }

    public function callbackUrl(): string
    {
        return $this->callbackUrl;
    }

    /**
     * Whether the daemon took it (200).
     *
     * @param list<array{index: int, reason: string, field: ?string}> $rejected v1.1: records of an ACKed chunk refused
     */
    public function send(string $ingestionId, int $n, string $checksum, string $status, string $reason = '', bool $retryable = false, array $rejected = []): bool
    {
        $body = self::body($ingestionId, $n, $checksum, $status, $reason, $retryable, $rejected);
        for ($attempt = 1; $attempt <= $this->attempts; ++$attempt) {
            $headers = ['Content-Type' => 'application/json'];
            if ($this->secret !== '') {
                $headers[Signature::HEADER] = Signature::sign($this->secret, $body, time());
            }
            try {
                $code = $this->http->request('POST', $this->callbackUrl, [
                    'headers' => $headers, 'body' => $body, 'timeout' => $this->timeout,
                ])->getStatusCode();
            } catch (TransportExceptionInterface $e) {
                $code = 0;
                $error = $e->getMessage();
            }
            if ($code === 200) {
                return true;
            }
            if ($code >= 400 && $code < 500 && !\in_array($code, [408, 425, 429], true)) {
                $this->logger->warning('pimingest: the daemon refused the callback', ['ingestion' => $ingestionId, 'chunk' => $n, 'status' => $code]);

                return false;
            }
            $this->logger->notice('pimingest: callback failed; retrying', [
                'ingestion' => $ingestionId, 'chunk' => $n, 'attempt' => $attempt, 'status' => $code, 'error' => $error ?? null,
            ]);
            if ($attempt < $this->attempts) {
                usleep((int) (1e6 * min($this->backoff * 2 ** ($attempt - 1), 30.0)));
            }
        }

        return false;
    }

    /**
     * The callback's JSON text (tests/vectors/protocol-v1.json holds examples).
     *
     * @param list<array{index: int, reason: string, field: ?string}> $rejected
     */
    public static function body(string $ingestionId, int $n, string $checksum, string $status, string $reason = '', bool $retryable = false, array $rejected = []): string
    {
        $payload = ['ingestion_id' => $ingestionId, 'chunk' => $n, 'checksum' => $checksum, 'status' => $status];
        if ($status === 'reject') {
            $payload += ['reason' => mb_substr($reason, 0, 2000), 'retryable' => $retryable];
        }
        if ($status === 'ack' && $rejected !== []) {
            $payload['rejected'] = array_map(
                static fn (array $r): array => ['index' => $r['index'], 'reason' => mb_substr($r['reason'], 0, 2000)]
                    + ($r['field'] !== null ? ['field' => $r['field']] : []),
                $rejected,
            );
        }

        return json_encode($payload, \JSON_THROW_ON_ERROR | \JSON_UNESCAPED_SLASHES | \JSON_UNESCAPED_UNICODE);
    }
}
