<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Tests\Unit;

use PHPUnit\Framework\Attributes\DataProvider;
use PHPUnit\Framework\TestCase;
use Pimingestd\PimcoreBundle\Ack\AckSender;
use Pimingestd\PimcoreBundle\Apply\Chunk;
use Pimingestd\PimcoreBundle\Protocol\Manifest;
use Pimingestd\PimcoreBundle\Protocol\ProtocolError;
use Pimingestd\PimcoreBundle\Protocol\Signature;

/**
 * The shared vectors (tests/vectors/protocol-v1.json, also read by the Python suite), and each way a
 * signature or a chunk's headers can be wrong.
 */
final class ProtocolTest extends TestCase
{
    /** @return array<string, mixed> */
    private static function vectors(): array
    {
        return json_decode((string) file_get_contents(\dirname(__DIR__, 3) . '/tests/vectors/protocol-v1.json'), true, 32, \JSON_THROW_ON_ERROR);
    }

    public function testSignaturesMatchTheSharedVectors(): void
    {
        $cases = self::vectors()['signatures'];
        self::assertGreaterThanOrEqual(5, \count($cases));
        foreach ($cases as $case) {
            self::assertSame($case['header'], Signature::sign($case['secret'], $case['body'], $case['t'], $case['key']));
            Signature::verify($case['secret'], $case['header'], $case['body'], $case['t'] + 299, $case['key']);
        }
    }

    public function testDigestsManifestsAndFileNamesMatchTheSharedVectors(): void
    {
        $v = self::vectors();
        foreach ($v['digests'] as $case) {
            self::assertSame($case['checksum'], 'sha256:' . hash('sha256', $case['body']));
            self::assertSame($case['content_digest'], 'sha-256=:' . base64_encode(hash('sha256', $case['body'], true)) . ':');
        }
        foreach ($v['manifests'] as $case) {
            self::assertSame($case['manifest'], Manifest::of($case['checksums']));
        }
        foreach ($v['file_names'] as $case) {
            [$headers, $body] = Wire::chunk(str_repeat('a', 32), 1, [['x' => 1]], 0, '', $case['name']);
            self::assertSame($case['header'], $headers['pimingest-file-name']);
            self::assertSame($case['name'], Wire::parse($headers, $body)->fileName);
        }
    }

    /** Protocol v1.1: the ACK bodies the bundle builds are the vectors' bytes; tombstones are told by their text. */
    public function testV11AckBodiesAndTombstonesMatchTheSharedVectors(): void
    {
        $v = self::vectors();
        $built = 0;
        foreach ($v['acks_v1_1'] as $case) {
            if ($case['answer'] !== 200) {
                continue;  // malformed lists: the daemon's to refuse (tests/test_vectors.py)
            }
            $rejected = array_map(static fn (array $r): array => $r + ['field' => null], $case['rejected']);
            $body = json_decode($case['body'], true, 8, \JSON_THROW_ON_ERROR);
            self::assertSame($case['body'], AckSender::body($body['ingestion_id'], $body['chunk'], $body['checksum'], 'ack', rejected: $rejected));
            ++$built;
        }
        self::assertGreaterThanOrEqual(2, $built);
        foreach ($v['tombstones'] as $case) {
            self::assertTrue(Chunk::isTombstoneText($case['text']), $case['text']);
            self::assertTrue(Chunk::isTombstone(Chunk::decode($case['text'])));
        }
        foreach ($v['not_tombstones'] as $text) {
            self::assertFalse(Chunk::isTombstoneText($text), $text);
            self::assertFalse(Chunk::isTombstone(Chunk::decode($text)), $text);
        }
    }

    /** @return array<string, array{?string, int, string}> */
    public static function badSignatures(): array
    {
        $good = Signature::sign('s3cret', '[1]', 1000, 'k:1');

        return [
            'missing' => [null, 1000, 'missing'],
            'empty' => ['', 1000, 'missing'],
            'no v1' => ['t=1000', 1000, 'malformed'],
            'not hex' => ['t=1000,v1=' . str_repeat('z', 64), 1000, 'malformed'],
            'garbage' => ['nonsense', 1000, 'malformed'],
            'non-ASCII digits' => ['t=١٠٠٠,v1=' . str_repeat('a', 64), 1000, 'malformed'],
            'stale' => [$good, 1301, 'more than 300 s'],
            'from the future' => [$good, 699, 'more than 300 s'],
            'wrong mac' => ['t=1000,v1=' . str_repeat('a', 64), 1000, 'does not match'],
            'another key' => [Signature::sign('s3cret', '[1]', 1000, 'k:2'), 1000, 'does not match'],
            'another secret' => [Signature::sign('other', '[1]', 1000, 'k:1'), 1000, 'does not match'],
        ];
    }

    /** @dataProvider badSignatures */
    #[DataProvider('badSignatures')]
    public function testEveryBadSignatureIsA401(?string $header, int $now, string $why): void
    {
        try {
            Signature::verify('s3cret', $header, '[1]', $now, 'k:1');
            self::fail('accepted');
        } catch (ProtocolError $e) {
            self::assertSame(401, $e->status);
            self::assertStringContainsString($why, $e->detail);
        }
    }

    public function testBadDigestsAndHeadersAre400(): void
    {
        [$headers, $body] = Wire::chunk(str_repeat('a', 32), 1, [['sku' => 'A']], 0);
        $broken = [
            'digest of other bytes' => [['content-digest' => 'sha-256=:' . base64_encode(hash('sha256', 'x', true)) . ':'], 'bad digest'],
            'no digest' => [['content-digest' => null], 'bad digest'],
            'chunk 0' => [['pimingest-chunk' => '0'], 'Pimingest-Chunk'],
            'key of another chunk' => [['idempotency-key' => str_repeat('a', 32) . ':2'], 'Idempotency-Key'],
            'short ingestion id' => [['pimingest-ingestion' => 'abc', 'idempotency-key' => 'abc:1'], 'Pimingest-Ingestion'],
            'no callback' => [['pimingest-callback' => null], 'Pimingest-Callback'],
            'records not a number' => [['pimingest-records' => 'x'], 'Pimingest-Records'],
        ];
        foreach ($broken as $label => [$change, $why]) {
            $h = array_filter(array_merge($headers, $change), static fn ($v) => $v !== null);
            try {
                Wire::parse($h, $body);
                self::fail("{$label}: accepted");
            } catch (ProtocolError $e) {
                self::assertSame(400, $e->status, $label);
                self::assertStringContainsString($why, $e->getMessage(), $label);
            }
        }
        $signed = Wire::chunk(str_repeat('a', 32), 1, [['sku' => 'A']], 0, 's3cret');
        self::assertSame(1, Wire::parse($signed[0], $signed[1], 's3cret')->n);
        try {
            Wire::parse($headers, $body, 's3cret');  // unsigned, but a secret is configured
            self::fail('an unsigned chunk was accepted');
        } catch (ProtocolError $e) {
            self::assertSame(401, $e->status);
        }
    }

    /** Protocol v2's chunk headers: what the bundle reads from each vector, or the 400 it answers. */
    public function testV2ChunkHeadersMatchTheSharedVectors(): void
    {
        $cases = self::vectors()['v2_chunk_headers'];
        self::assertGreaterThanOrEqual(8, \count($cases));
        foreach ($cases as $case) {
            [$headers, $body] = Wire::chunk(str_repeat('0', 32), 1, ['{"a":1}'], 0);
            foreach ($case['headers'] as $name => $value) {
                $headers[strtolower($name)] = $value;
            }
            try {
                $h = Wire::parse($headers, $body);
            } catch (ProtocolError $e) {
                self::assertArrayHasKey('error', $case, $case['about'] . ': ' . $e->getMessage());
                self::assertSame(400, $e->status, $case['about']);
                self::assertStringContainsString($case['error'], $e->getMessage(), $case['about']);
                continue;
            }
            self::assertArrayNotHasKey('error', $case, $case['about']);
            self::assertSame([$case['protocol'], $case['window'], $case['order'], $case['key']], [$h->protocol, $h->window, $h->order, $h->key], $case['about']);
        }
    }

    /**
     * Keys are text: the key the bundle compares is the vectors' text for every record, an integer as its
     * decimal text, and no key for what the daemon refuses (docs/protocol.md, "Keys").
     */
    public function testRecordKeysAreTheVectorsText(): void
    {
        $raw = json_decode((string) file_get_contents(\dirname(__DIR__, 3) . '/tests/vectors/protocol-v1.json'), true, 32, \JSON_THROW_ON_ERROR | \JSON_BIGINT_AS_STRING);
        $cases = $raw['keys']['cases'];
        self::assertGreaterThanOrEqual(10, \count($cases));
        foreach ($cases as $case) {
            self::assertSame($case['text'], Chunk::key($case['record'], $case['key']), json_encode($case['record'], \JSON_THROW_ON_ERROR));
        }
        foreach ($raw['tombstones'] as $case) {
            self::assertSame(json_decode($case['stored'], true, 2, \JSON_THROW_ON_ERROR), Chunk::key(Chunk::decode($case['text']), $case['key']));
        }
    }
}
