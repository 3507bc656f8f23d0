<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Protocol;

/**
 * A chunk POST as protocol v1 defines it, with v2's negotiated headers (Pimingest-Protocol, -Window,
 * -Order, -Key) when present: its headers checked, its body's digest verified.
 */
final class ChunkHeaders
{
    public const MAX_WINDOW = 256;

    private function __construct(
        public readonly string $ingestionId,
        public readonly string $fileId,
        public readonly int $n,
        public readonly ?int $total,
        public readonly int $records,
        public readonly int $offset,
        public readonly string $callback,
        public readonly string $checksum,
        public readonly ?string $fileName,
        public readonly int $protocol = 1,
        public readonly int $window = 1,
        public readonly string $order = 'strict',
        public readonly ?string $key = null,
    ) {
    }

    /** Whether chunks of this ingestion may be applied in any order (v2 by_key). */
    public function byKey(): bool
    {
        return $this->protocol === 2 && $this->order === 'by_key';
    }

    /**
     * @param callable(string): ?string $header the request's header by name (case-insensitive), or null
     *
     * @throws ProtocolError 401 (signature) or 400 (digest, headers)
     */
    public static function parse(callable $header, string $body, string $secret, int $now): self
    {
        $key = $header('Idempotency-Key');
        if ($secret !== '') {
            Signature::verify($secret, $header(Signature::HEADER), $body, $now, $key ?? '');
        }
        $digest = $header('Content-Digest') ?? '';
        $raw = hash('sha256', $body, true);
        if (!preg_match('/^sha-256=:([A-Za-z0-9+\/=]+):$/', $digest, $m) || !hash_equals(base64_encode($raw), $m[1])) {
            throw new ProtocolError(400, 'bad digest', 'Content-Digest does not match the body');
        }
        $ingestion = self::required($header, 'Pimingest-Ingestion', '/^[0-9a-f]{32}$/');
        $n = (int) self::required($header, 'Pimingest-Chunk', '/^[1-9][0-9]{0,9}$/');
        if ($key !== "{$ingestion}:{$n}") {
            throw new ProtocolError(400, 'bad headers', 'Idempotency-Key must be <ingestion>:<chunk>');
        }
        $total = $header('Pimingest-Chunk-Total');
        if ($total !== null && !preg_match('/^[0-9]{1,10}$/', $total)) {
            throw new ProtocolError(400, 'bad headers', 'Pimingest-Chunk-Total must be a whole number');
        }
        $name = $header('Pimingest-File-Name');
        [$protocol, $window, $order, $keyField] = self::v2($header);

        return new self(
            $ingestion,
            self::required($header, 'Pimingest-File', '/^sha256:[0-9a-f]{64}$/'),
            $n,
            $total === null ? null : (int) $total,
            (int) self::required($header, 'Pimingest-Records', '/^[0-9]{1,10}$/'),
            (int) self::required($header, 'Pimingest-Offset', '/^[0-9]{1,15}$/'),
            self::required($header, 'Pimingest-Callback', '/^https?:\/\/\S+$/'),
            'sha256:' . bin2hex($raw),
            $name === null ? null : rawurldecode($name),
            $protocol,
            $window,
            $order,
            $keyField,
        );
    }

    /**
     * @param callable(string): ?string $header
     *
     * @return array{0: int, 1: int, 2: string, 3: ?string} protocol, window, order, key field
     */
    private static function v2(callable $header): array
    {
        $version = $header('Pimingest-Protocol');
        if ($version === null || $version === '1') {
            return [1, 1, 'strict', null];
        }
        if ($version !== '2') {
            throw new ProtocolError(400, 'bad headers', 'Pimingest-Protocol must be 1 or 2');
        }
        $window = self::required($header, 'Pimingest-Window', '/^[0-9]{1,3}$/');
        if ((int) $window < 1 || (int) $window > self::MAX_WINDOW) {
            throw new ProtocolError(400, 'bad headers', 'Pimingest-Window must be between 1 and ' . self::MAX_WINDOW);
        }
        $order = self::required($header, 'Pimingest-Order', '/^(strict|by_key)$/');
        $key = $header('Pimingest-Key');

        return [2, (int) $window, $order, $key === null ? null : rawurldecode($key)];
    }

    /** @param callable(string): ?string $header */
    private static function required(callable $header, string $name, string $pattern): string
    {
        $value = $header($name);
        if ($value === null || !preg_match($pattern, $value)) {
            throw new ProtocolError(400, 'bad headers', "{$name} is missing or malformed");
        }

        return $value;
    }
}
