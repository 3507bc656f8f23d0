<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Protocol;

/**
 * Protocol v1 signatures (docs/protocol.md, "Signatures in one place").
 *
 * Daemon to PIM-Core: HMAC-SHA256(secret, "<t>.<key>.<body>"); PIM-Core to daemon: HMAC-SHA256(secret,
 * "<t>.<body>"). The header is "t=<unix seconds>,v1=<hex>". MACs are compared in constant time, and a
 * timestamp more than 300 seconds from the clock is refused.
 */
final class Signature
{
    public const HEADER = 'Pimingest-Signature';
    public const WINDOW = 300;

    public static function sign(string $secret, string $body, int $t, ?string $key = null): string
    {
        $message = $key === null ? "{$t}.{$body}" : "{$t}.{$key}.{$body}";

        return "t={$t},v1=" . hash_hmac('sha256', $message, $secret);
    }

    /**
     * @throws ProtocolError 401 for a missing, malformed, stale or wrong signature
     */
    public static function verify(string $secret, ?string $header, string $body, int $now, ?string $key = null): void
    {
        if ($header === null || $header === '') {
            throw new ProtocolError(401, 'bad signature', 'the Pimingest-Signature header is missing');
        }
        $parts = [];
        foreach (explode(',', $header) as $item) {
            $pair = explode('=', trim($item), 2);
            if (\count($pair) !== 2) {
                throw new ProtocolError(401, 'bad signature', 'malformed Pimingest-Signature header');
            }
            $parts[$pair[0]] = $pair[1];
        }
        $t = $parts['t'] ?? '';
        $mac = $parts['v1'] ?? '';
        if (!preg_match('/^[0-9]{1,12}$/', $t) || !preg_match('/^[0-9a-f]{64}$/', $mac)) {
            throw new ProtocolError(401, 'bad signature', 'malformed Pimingest-Signature header');
        }
        if (abs($now - (int) $t) > self::WINDOW) {
            throw new ProtocolError(401, 'bad signature', 'the signature timestamp is more than 300 s from this clock');
        }
        $expected = substr(self::sign($secret, $body, (int) $t, $key), \strlen("t={$t},v1="));
        if (!hash_equals($expected, $mac)) {
            throw new ProtocolError(401, 'bad signature', 'the signature does not match');
        }
    }
}
