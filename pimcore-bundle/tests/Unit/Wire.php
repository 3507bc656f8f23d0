<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Tests\Unit;

use Pimingestd\PimcoreBundle\Protocol\ChunkHeaders;
use Pimingestd\PimcoreBundle\Protocol\Signature;

/** Chunk POSTs as the daemon sends them (docs/protocol.md), for the tests. */
final class Wire
{
    public const CALLBACK = 'http://127.0.0.1:9/callbacks/ack';

    /**
     * @param list<array<string, mixed>|string> $records
     *
     * @return array{0: array<string, string>, 1: string}
     */
    public static function chunk(string $ingestion, int $n, array $records, int $offset, string $secret = '', ?string $fileName = null): array
    {
        $body = '[' . implode(',', array_map(static fn ($r) => \is_string($r) ? $r : json_encode($r, \JSON_UNESCAPED_SLASHES | \JSON_UNESCAPED_UNICODE), $records)) . ']';
        $key = "{$ingestion}:{$n}";
        $headers = [
            'content-digest' => 'sha-256=:' . base64_encode(hash('sha256', $body, true)) . ':',
            'idempotency-key' => $key,
            'pimingest-ingestion' => $ingestion,
            'pimingest-file' => 'sha256:' . str_repeat('ab', 32),
            'pimingest-chunk' => (string) $n,
            'pimingest-records' => (string) \count($records),
            'pimingest-offset' => (string) $offset,
            'pimingest-callback' => self::CALLBACK,
        ];
        if ($fileName !== null) {
            $headers['pimingest-file-name'] = rawurlencode($fileName);
        }
        if ($secret !== '') {
            $headers['pimingest-signature'] = Signature::sign($secret, $body, time(), $key);
        }

        return [$headers, $body];
    }

    /** @param array<string, string> $headers */
    public static function parse(array $headers, string $body, string $secret = ''): ChunkHeaders
    {
        return ChunkHeaders::parse(static fn (string $name): ?string => $headers[strtolower($name)] ?? null, $body, $secret, time());
    }
}
