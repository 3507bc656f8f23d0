<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Ledger;

use Doctrine\DBAL\Connection;
use Doctrine\DBAL\Schema\Schema as DbalSchema;
use Pimingestd\PimcoreBundle\Protocol\ChunkHeaders;
use Pimingestd\PimcoreBundle\Protocol\Manifest;
use Pimingestd\PimcoreBundle\Protocol\ProtocolError;

/**
 * The durable ledger: which chunk each ingestion expects next (in order) or how many it took (by_key),
 * which were taken, which applied.
 *
 * Every decision reads and writes under a row lock on the ingestion (SELECT ... FOR UPDATE where the
 * platform has it), inside the caller's transaction, so two POSTs of one ingestion cannot both take
 * chunk n.
 */
final class Ledger
{
    public const TAKEN = 'taken';          // new: queue it for the worker
    public const QUEUED = 'queued';        // a duplicate of a chunk not applied yet: the worker will ACK it
    public const APPLIED = 'applied';      // a duplicate of an applied chunk: ACK again, apply nothing

    public function __construct(private readonly Connection $db)
    {
    }

    public function connection(): Connection
    {
        return $this->db;
    }

    /** Create the tables that do not exist yet; returns the names created. @return list<string> */
    public function setup(): array
    {
        $manager = $this->db->createSchemaManager();
        $have = array_map('strtolower', $manager->listTableNames());
        $schema = new DbalSchema([], [], $manager->createSchemaConfig());  // the app's default table options
        Schema::define($schema);
        $created = [];
        foreach ($schema->getTables() as $table) {
            if (!\in_array(strtolower($table->getName()), $have, true)) {
                $manager->createTable($table);
                $created[] = $table->getName();
            }
        }
        // A ledger from before protocol v1.1 gains the chunk outcome columns (as Version20261202000000 does).
        $columns = array_map('strtolower', array_keys($manager->listTableColumns(Schema::CHUNK)));
        if (!\in_array('refused', $columns, true)) {
            $this->db->executeStatement('ALTER TABLE ' . Schema::CHUNK . ' ADD COLUMN refused TEXT NULL');
            $this->db->executeStatement('ALTER TABLE ' . Schema::CHUNK . ' ADD COLUMN tombstones INTEGER NOT NULL DEFAULT 0');
            $created[] = Schema::CHUNK . '.refused, ' . Schema::CHUNK . '.tombstones';
        }
        // A ledger an earlier setup made utf8mb3 (DBAL 3's default) becomes utf8mb4 (as Version20261206000000).
        foreach (Schema::charsetFixes($this->db) as $sql) {
            $this->db->executeStatement($sql);
            $created[] = $sql;
        }

        return $created;
    }

    /**
     * Decide a chunk POST by the protocol's order rules, and take it when its turn has come (its body kept
     * until applied). Call inside a transaction.
     *
     * - v1: chunk n is taken when it is the next one; a chunk ahead is a 409.
     * - v2 strict: chunk n is taken when it is the next one and chunk n-1 is applied (so workers running in
     *   parallel still apply in chunk order); a chunk ahead of its turn is a 425, which the daemon re-sends.
     * - v2 by_key: any chunk not taken yet is taken, in any order (the daemon never has two chunks that
     *   share a key in flight); `next_chunk` then counts the chunks taken, plus one.
     *
     * @throws ProtocolError 409 for a different checksum, a v1 chunk ahead or a wrong offset; 425 (v2 strict)
     */
    public function take(ChunkHeaders $h, string $body, float $now): string
    {
        $ing = $this->lockIngestion($h->ingestionId);
        if ($ing === null) {
            $this->db->insert(Schema::INGESTION, [
                'ingestion_id' => $h->ingestionId,
                'file_id' => $h->fileId,
                'file_name' => $h->fileName,
                'next_chunk' => 1,
                'records_taken' => 0,
                'status' => 'open',
                'created_at' => $now,
                'updated_at' => $now,
            ]);
            $ing = $this->lockIngestion($h->ingestionId);
            \assert($ing !== null);
        }
        $next = (int) $ing['next_chunk'];
        if ($h->byKey()) {
            return $this->takeAnyOrder($h, $body, $now);
        }
        if ($h->n < $next) {
            $row = $this->db->fetchAssociative(
                'SELECT checksum, state FROM ' . Schema::CHUNK . ' WHERE ingestion_id = ? AND n = ?',
                [$h->ingestionId, $h->n],
            );
            if ($row === false || $row['checksum'] !== $h->checksum) {
                throw new ProtocolError(409, 'checksum differs', "chunk {$h->n} was taken with another checksum");
            }

            return $row['state'] === 'applied' ? self::APPLIED : self::QUEUED;
        }
        if ($h->n > $next) {
            $status = $h->protocol === 2 ? 425 : 409;  // v2: an early chunk is normal; the daemon sends it again
            throw new ProtocolError($status, 'chunk ahead', "chunk {$h->n} arrived; chunk {$next} is next", ['expected_chunk' => $next]);
        }
        if ($h->protocol === 2 && $h->n > 1 && $this->chunkState($h->ingestionId, $h->n - 1) !== 'applied') {
            throw new ProtocolError(425, 'chunk ahead', "chunk {$h->n} arrived; chunk " . ($h->n - 1) . ' is not applied yet', ['expected_chunk' => $h->n - 1]);
        }
        if ($h->offset !== (int) $ing['records_taken']) {
            throw new ProtocolError(
                409,
                'offset differs',
                "chunk {$h->n} starts at record {$h->offset}; the chunks taken before hold {$ing['records_taken']}",
            );
        }
        $this->insertChunk($h, $body, $now);

        return self::TAKEN;
    }

    /** v2 by_key: a chunk taken before (in any state) is a duplicate; any other is taken now. */
    private function takeAnyOrder(ChunkHeaders $h, string $body, float $now): string
    {
        $row = $this->db->fetchAssociative(
            'SELECT checksum, state FROM ' . Schema::CHUNK . ' WHERE ingestion_id = ? AND n = ?',
            [$h->ingestionId, $h->n],
        );
        if ($row !== false) {
            if ($row['checksum'] !== $h->checksum) {
                throw new ProtocolError(409, 'checksum differs', "chunk {$h->n} was taken with another checksum");
            }

            return $row['state'] === 'applied' ? self::APPLIED : self::QUEUED;
        }
        $this->insertChunk($h, $body, $now);

        return self::TAKEN;
    }

    private function insertChunk(ChunkHeaders $h, string $body, float $now): void
    {
        $this->db->insert(Schema::CHUNK, [
            'ingestion_id' => $h->ingestionId,
            'n' => $h->n,
            'checksum' => $h->checksum,
            'records' => $h->records,
            'first_record' => $h->offset,
            'state' => 'queued',
            'body' => $body,
            'received_at' => $now,
        ], ['body' => \Doctrine\DBAL\ParameterType::LARGE_OBJECT]);
        // In order (v1, strict) this makes next_chunk n + 1; under by_key it counts the chunks taken.
        $this->db->executeStatement(
            'UPDATE ' . Schema::INGESTION . ' SET next_chunk = next_chunk + 1, records_taken = records_taken + ?, updated_at = ? WHERE ingestion_id = ?',
            [$h->records, $now, $h->ingestionId],
        );
    }

    private function chunkState(string $ingestionId, int $n): ?string
    {
        $state = $this->db->fetchOne('SELECT state FROM ' . Schema::CHUNK . ' WHERE ingestion_id = ? AND n = ?', [$ingestionId, $n]);

        return $state === false ? null : (string) $state;
    }

    /**
     * The chunk, locked for applying, or null when it is no longer taken (rejected and released). With
     * `$ingestionToo` false only the chunk's row is locked, so workers apply different chunks of one
     * ingestion in parallel (the order rules were kept when the chunks were taken).
     *
     * @return array{checksum: string, records: int, first_record: int, state: string, body: ?string, file_name: ?string, refused: list<array{index: int, reason: string, field: ?string}>}|null
     */
    public function lockChunk(string $ingestionId, int $n, bool $ingestionToo = true): ?array
    {
        if ($ingestionToo) {
            $this->lockIngestion($ingestionId);
        }
        // The chunk's row alone is locked (a join FOR UPDATE would lock the ingestion's row too); the file
        // name is read without a lock: it never changes.
        $row = $this->db->fetchAssociative(
            'SELECT checksum, records, first_record, state, body, refused FROM ' . Schema::CHUNK
            . ' WHERE ingestion_id = ? AND n = ?' . $this->forUpdate(),
            [$ingestionId, $n],
        );
        if ($row === false) {
            return null;
        }
        $row['file_name'] = $this->db->fetchOne('SELECT file_name FROM ' . Schema::INGESTION . ' WHERE ingestion_id = ?', [$ingestionId]);
        $body = $row['body'];
        if (\is_resource($body)) {
            $body = stream_get_contents($body);
        }

        return [
            'checksum' => (string) $row['checksum'],
            'records' => (int) $row['records'],
            'first_record' => (int) $row['first_record'],
            'state' => (string) $row['state'],
            'body' => $body === null ? null : (string) $body,
            'file_name' => $row['file_name'] === null ? null : (string) $row['file_name'],
            'refused' => $row['refused'] === null ? [] : json_decode((string) $row['refused'], true, 8, \JSON_THROW_ON_ERROR),
        ];
    }

    /**
     * Mark a chunk applied (its body dropped), in the transaction that applied its records, with the records
     * refused (every re-ACK lists them again) and the tombstones taken.
     *
     * @param list<array{index: int, reason: string, field: ?string}> $refused
     */
    public function markApplied(string $ingestionId, int $n, float $now, array $refused = [], int $tombstones = 0): void
    {
        $this->db->executeStatement(
            'UPDATE ' . Schema::CHUNK . " SET state = 'applied', body = NULL, applied_at = ?, refused = ?, tombstones = ?"
            . ' WHERE ingestion_id = ? AND n = ?',
            [$now, $refused === [] ? null : json_encode($refused, \JSON_THROW_ON_ERROR | \JSON_UNESCAPED_UNICODE), $tombstones, $ingestionId, $n],
        );
        // The chunk's row now says it all: its per-record marks (data_object) are done with.
        $this->db->executeStatement('DELETE FROM ' . Schema::MARK . ' WHERE ingestion_id = ? AND n = ?', [$ingestionId, $n]);
    }

    /**
     * The per-record marks of chunk n with these bytes, by position in the chunk (-1: its apply has begun).
     *
     * @return array<int, array{outcome: string, field: ?string, reason: ?string}>
     */
    public function marks(string $ingestionId, int $n, string $checksum): array
    {
        $marks = [];
        foreach ($this->db->fetchAllAssociative(
            'SELECT position, outcome, field, reason FROM ' . Schema::MARK . ' WHERE ingestion_id = ? AND n = ? AND checksum = ? ORDER BY position',
            [$ingestionId, $n, $checksum],
        ) as $row) {
            $marks[(int) $row['position']] = [
                'outcome' => (string) $row['outcome'],
                'field' => $row['field'] === null ? null : (string) $row['field'],
                'reason' => $row['reason'] === null ? null : (string) $row['reason'],
            ];
        }

        return $marks;
    }

    /** One record's mark (call in a short transaction of its own, right after the record's save). */
    public function mark(string $ingestionId, int $n, string $checksum, int $position, string $outcome, ?string $field, ?string $reason, ?string $contentHash, float $now): void
    {
        // A mark of other bytes (a chunk released and taken with another checksum) is stale: replace it.
        $this->db->executeStatement(
            'DELETE FROM ' . Schema::MARK . ' WHERE ingestion_id = ? AND n = ? AND position = ?',
            [$ingestionId, $n, $position],
        );
        $this->db->insert(Schema::MARK, [
            'ingestion_id' => $ingestionId, 'n' => $n, 'position' => $position, 'checksum' => $checksum, 'outcome' => $outcome,
            'field' => $field, 'reason' => $reason, 'content_hash' => $contentHash, 'marked_at' => $now,
        ]);
    }

    /**
     * Take the chunk for applying record by record, outside any transaction: a session-level named lock on
     * MariaDB/MySQL (released when the worker's connection ends, a SIGKILL included), so a duplicate message
     * for a chunk another worker is applying is dropped (that worker ACKs it). SQLite has one writer anyway.
     */
    public function claim(string $ingestionId, int $n): bool
    {
        if (!$this->namedLocks()) {
            return true;
        }

        return (int) $this->db->fetchOne('SELECT GET_LOCK(?, 0)', [self::lockName($ingestionId, $n)]) === 1;
    }

    public function unclaim(string $ingestionId, int $n): void
    {
        if ($this->namedLocks()) {
            $this->db->fetchOne('SELECT RELEASE_LOCK(?)', [self::lockName($ingestionId, $n)]);
        }
    }

    private function namedLocks(): bool
    {
        return $this->db->getDatabasePlatform() instanceof \Doctrine\DBAL\Platforms\AbstractMySQLPlatform;
    }

    private static function lockName(string $ingestionId, int $n): string
    {
        return "pimingest:{$ingestionId}:{$n}";  // at most 64 characters: 10 + 32 + 1 + 10
    }

    /** A rejected chunk is released: the ingestion expects it again (a re-send is applied afresh). */
    public function release(string $ingestionId, int $n): void
    {
        $row = $this->db->fetchAssociative(
            'SELECT records FROM ' . Schema::CHUNK . " WHERE ingestion_id = ? AND n = ? AND state = 'queued'",
            [$ingestionId, $n],
        );
        if ($row === false) {
            return;
        }
        $this->db->executeStatement('DELETE FROM ' . Schema::CHUNK . ' WHERE ingestion_id = ? AND n = ?', [$ingestionId, $n]);
        // In order, n was the last chunk taken, so next_chunk goes back to n; under by_key the count drops.
        $this->db->executeStatement(
            'UPDATE ' . Schema::INGESTION . ' SET next_chunk = next_chunk - 1, records_taken = records_taken - ? WHERE ingestion_id = ?',
            [(int) $row['records'], $ingestionId],
        );
    }

    /**
     * Check a completion against what was applied; marks the ingestion completed.
     *
     * @param array<string, mixed> $body
     *
     * @throws ProtocolError 404 for an unknown ingestion, 409 when the counts or the manifest differ
     */
    public function complete(array $body, float $now): void
    {
        $id = (string) ($body['ingestion_id'] ?? '');
        $ing = $this->lockIngestion($id);
        $chunks = (int) ($body['chunks'] ?? -1);
        if ($ing === null) {
            if ($chunks === 0) {  // a file with no records: nothing was ever taken
                $this->db->insert(Schema::INGESTION, [
                    'ingestion_id' => $id, 'file_id' => (string) ($body['file_id'] ?? ''),
                    'file_name' => $body['file_name'] ?? null, 'next_chunk' => 1, 'records_taken' => 0,
                    'status' => 'completed', 'created_at' => $now, 'updated_at' => $now, 'completed_at' => $now,
                ]);

                return;
            }
            throw new ProtocolError(404, 'unknown ingestion', "no chunk of ingestion {$id} was taken");
        }
        $applied = $this->db->fetchAllAssociative(
            'SELECT n, checksum, records, refused, tombstones FROM ' . Schema::CHUNK . " WHERE ingestion_id = ? AND state = 'applied' ORDER BY n",
            [$id],
        );
        // v1.1: `records` counts every record but the tombstones; `rejected` and `deleted` are 0 when absent.
        $tombstones = array_sum(array_map(static fn (array $r): int => (int) $r['tombstones'], $applied));
        $refused = array_sum(array_map(
            static fn (array $r): int => $r['refused'] === null ? 0 : \count(json_decode((string) $r['refused'], true, 8, \JSON_THROW_ON_ERROR)),
            $applied,
        ));
        $records = array_sum(array_map(static fn (array $r): int => (int) $r['records'], $applied)) - (int) ($body['deleted'] ?? 0);
        $manifest = Manifest::of(array_map(static fn (array $r): string => (string) $r['checksum'], $applied));
        $problems = [];
        if (\count($applied) !== $chunks) {
            $problems[] = \count($applied) . " chunks applied, the completion says {$chunks}";
        }
        if ($records !== (int) ($body['records'] ?? -1)) {
            $problems[] = "{$records} records applied, the completion says " . (int) ($body['records'] ?? -1);
        }
        if ($refused !== (int) ($body['rejected'] ?? 0)) {
            $problems[] = "{$refused} records refused, the completion says " . (int) ($body['rejected'] ?? 0);
        }
        if ($tombstones !== (int) ($body['deleted'] ?? 0)) {
            $problems[] = "{$tombstones} tombstones taken, the completion says " . (int) ($body['deleted'] ?? 0);
        }
        if ($manifest !== ($body['manifest'] ?? null)) {
            $problems[] = 'the manifest differs from the applied chunks';
        }
        if ($problems !== []) {
            throw new ProtocolError(409, 'completion differs', implode('; ', $problems));
        }
        $this->db->executeStatement(
            'UPDATE ' . Schema::INGESTION . " SET status = 'completed', completed_at = COALESCE(completed_at, ?), updated_at = ? WHERE ingestion_id = ?",
            [$now, $now, $id],
        );
    }

    /** @return list<array<string, mixed>> */
    public function recent(int $limit = 20): array
    {
        return $this->db->fetchAllAssociative(
            'SELECT i.*, (SELECT COUNT(*) FROM ' . Schema::CHUNK . " c WHERE c.ingestion_id = i.ingestion_id AND c.state = 'applied') AS chunks_applied"
            . ' FROM ' . Schema::INGESTION . ' i ORDER BY i.created_at DESC LIMIT ' . max(1, $limit),
        );
    }

    /** @return array<string, mixed>|null */
    public function ingestion(string $id): ?array
    {
        $row = $this->db->fetchAssociative('SELECT * FROM ' . Schema::INGESTION . ' WHERE ingestion_id = ?', [$id]);

        return $row === false ? null : $row;
    }

    /** @return array<string, mixed>|null */
    private function lockIngestion(string $id): ?array
    {
        $row = $this->db->fetchAssociative(
            'SELECT * FROM ' . Schema::INGESTION . ' WHERE ingestion_id = ?' . $this->forUpdate(),
            [$id],
        );

        return $row === false ? null : $row;
    }

    private function forUpdate(): string
    {
        // SQLite has no row locks: its write transaction (BEGIN IMMEDIATE in the caller) serializes writers.
        return $this->db->getDatabasePlatform() instanceof \Doctrine\DBAL\Platforms\SqlitePlatform ? '' : ' FOR UPDATE';
    }
}
