<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Apply;

/**
 * One chunk as an applier sees it: its place in the file and its records, each the exact JSON text
 * the daemon sent (canonical JSON, decimals as written in the source).
 *
 * each() applies record by record. For an applier inside the chunk's transaction, each record runs in a
 * savepoint: a record that throws RecordRejected is undone alone and listed in the ACK's `rejected`
 * (protocol v1.1), and the chunk's other records commit. For a RecordByRecord applier there is no chunk
 * transaction: each record's outcome is marked (Progress) right after it, and a redelivery skips the
 * records marked before. A record with `"_deleted": true` is a tombstone: its key left the daemon's delta
 * scope.
 */
final class Chunk
{
    /** @var list<array{index: int, reason: string, field: ?string}> */
    private array $refused = [];

    /**
     * @param list<string> $records
     * @param (\Closure(callable(): void): void)|null $isolated runs one record's writes in a savepoint
     */
    public function __construct(
        public readonly string $ingestionId,
        public readonly int $n,
        public readonly int $firstRecord,
        public readonly ?string $fileName,
        public readonly array $records,
        private readonly ?\Closure $isolated = null,
        private readonly ?Progress $progress = null,
    ) {
    }

    /** @param callable(int $index, string $text): void $apply */
    public function each(callable $apply): void
    {
        foreach ($this->records as $i => $text) {
            $mark = $this->progress?->marked($i);
            if ($mark !== null) {  // applied or refused on an earlier delivery: its outcome stands
                if ($mark['outcome'] === 'refused') {
                    $this->refused[] = ['index' => $i, 'reason' => (string) $mark['reason'], 'field' => $mark['field']];
                }
                continue;
            }
            try {
                if ($this->isolated !== null) {
                    ($this->isolated)(static fn () => $apply($i, $text));
                } else {
                    $apply($i, $text);
                }
            } catch (RecordRejected $e) {
                $refused = ['index' => $i, 'reason' => mb_substr($e->reason, 0, 2000), 'field' => $e->field];
                $this->progress?->mark($i, new RecordRejected($e->offset, $e->field, $refused['reason']), $text);
                $this->refused[] = $refused;
                continue;
            }
            $this->progress?->mark($i, null, $text);
        }
    }

    /**
     * Whether record `$index` may already have been applied without its mark: the chunk's apply began on an
     * earlier delivery and this is the first record without a mark (the one a crash can catch between its
     * save and its mark; records are marked in order, so there is at most one). The applier then saves it
     * only if its content differs from what its key holds.
     */
    public function inCrashWindow(int $index): bool
    {
        if ($this->progress === null || !$this->progress->resumed()) {
            return false;
        }
        for ($i = 0; $i < $index; ++$i) {
            if ($this->progress->marked($i) === null) {
                return false;
            }
        }

        return $this->progress->marked($index) === null;
    }

    /** @return list<array{index: int, reason: string, field: ?string}> the records refused so far, in order */
    public function refused(): array
    {
        return $this->refused;
    }

    /** The chunk's tombstones, refused or not: the completion's `deleted` counts every one sent. */
    public function tombstones(): int
    {
        return \count(array_filter($this->records, self::isTombstoneText(...)));
    }

    public static function isTombstoneText(string $text): bool
    {
        return str_starts_with($text, '{"_deleted":true');
    }

    /** @param array<string, mixed> $record */
    public static function isTombstone(array $record): bool
    {
        return ($record['_deleted'] ?? null) === true;
    }

    /**
     * A record's key as PIM-Core compares it: text, byte for byte (docs/protocol.md, "Keys"). An integer is
     * its decimal text, so 100234 and "100234" are one key (the daemon sends them so, and refuses a file that
     * writes digit keys both ways); null for a key that is missing, empty, or neither text nor an integer.
     *
     * @param array<string, mixed> $record
     */
    public static function key(array $record, string $field): ?string
    {
        $key = $record[$field] ?? null;
        if (\is_int($key)) {
            return (string) $key;
        }
        if (\is_string($key) && $key !== '') {
            return $key;
        }

        return null;
    }

    /**
     * A record as PHP values (big integers as strings; other numbers as floats: use the text where
     * exactness matters).
     *
     * @return array<string, mixed>
     */
    public static function decode(string $record): array
    {
        $value = json_decode($record, true, 512, \JSON_BIGINT_AS_STRING | \JSON_THROW_ON_ERROR);

        return \is_array($value) ? $value : ['value' => $value];
    }

    /**
     * The top-level elements of a canonical JSON array, as their exact texts (no re-encoding).
     *
     * @return list<string>
     */
    public static function split(string $body): array
    {
        $len = \strlen($body);
        if ($len < 2 || $body[0] !== '[' || $body[$len - 1] !== ']') {
            throw new \InvalidArgumentException('a chunk body is a JSON array');
        }
        $out = [];
        $depth = 0;
        $start = 1;
        for ($i = 1; $i < $len - 1; ++$i) {
            $c = $body[$i];
            if ($c === '"') {  // to the string's closing quote, stepping over escapes
                $j = $i + 1;
                while (true) {
                    $j += strcspn($body, '"\\', $j);
                    if ($j >= $len - 1) {
                        throw new \InvalidArgumentException('a chunk body ends inside a string');
                    }
                    if ($body[$j] !== '\\') {
                        break;
                    }
                    $j += 2;
                }
                $i = $j;
            } elseif ($c === '{' || $c === '[') {
                ++$depth;
            } elseif ($c === '}' || $c === ']') {
                --$depth;
            } elseif ($c === ',' && $depth === 0) {
                $out[] = substr($body, $start, $i - $start);
                $start = $i + 1;
            }
        }
        if ($len > 2) {
            $out[] = substr($body, $start, $len - 1 - $start);
        }

        return $out;
    }
}
