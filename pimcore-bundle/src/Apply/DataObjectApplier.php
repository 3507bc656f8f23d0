<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Apply;

use Doctrine\DBAL\Exception\ConnectionException;
use Doctrine\DBAL\Exception\ConnectionLost;
use Doctrine\DBAL\Exception\DriverException;
use Doctrine\DBAL\Exception\RetryableException;
use Pimcore\Cache\RuntimeCache;
use Pimcore\Model\DataObject\Concrete;
use Pimcore\Model\DataObject\Service as ObjectService;
use Pimcore\Model\Element\DuplicateFullPathException;
use Pimcore\Model\Element\Service as ElementService;
use Pimcore\Model\Element\ValidationException;
use Pimcore\Model\Version;

/**
 * Upserts DataObjects of one class by a key field, in a parent folder, through a field map: record by
 * record, each in Pimcore's own save transaction (README.md, "Exactly once"). Written against Pimcore
 * 11/12's public API: objects are built by Pimcore's model factory (so class overrides hold), found through
 * the class's Listing by an exact (binary) comparison and loaded fresh with getById(force), and written
 * through the generated, typed setters.
 *
 * Options (from the bundle's `appliers` configuration):
 * - class: the DataObject class name (e.g. Product, for Pimcore\Model\DataObject\Product);
 * - key: the record field that identifies an object (e.g. sku), also the object's field of that name (a
 *   text field); its value is the object's key through Pimcore's getValidKey;
 * - folder: the parent folder's path (created if missing);
 * - publish: publish saved objects (default true);
 * - versioning: keep versions while loading (default false: Version::disable() around the chunk, and
 *   enabled again after it only if it was on before);
 * - deletions: what a tombstone (`"_deleted": true`, the key left the daemon's delta scope) does to its
 *   object: "unpublish" (default) or "delete"; an object already gone is fine; "delete" refuses an object
 *   with children (Pimcore would delete its whole subtree) unless `delete_children: true`;
 * - fields: record field => {field: object field, type: string|number|boolean|date|select|multiselect|
 *   localized|relation|relations, language?: for localized, class?/key?: for relations}.
 *
 * Every class and field named is checked when the applier is built (the worker's start): the class exists,
 * each field has its setter, and the setter's declared type takes what the field map's type produces.
 */
final class DataObjectApplier implements RecordByRecord
{
    private const NS = 'Pimcore\\Model\\DataObject\\';
    private const TYPES = ['string', 'number', 'boolean', 'date', 'select', 'multiselect', 'localized', 'relation', 'relations'];

    /** @var class-string */
    private readonly string $class;
    private readonly string $keyField;
    private readonly string $folder;
    /** @var array<string, array{field: string, type: string, language: ?string, accepts: list<string>, class?: class-string, key?: string}> */
    private array $fields = [];
    /** @var array<string, mixed> */
    private readonly array $options;

    /**
     * @param array<string, mixed> $options
     * @param object $models Pimcore's model factory (the `pimcore.model.factory` service: build(class))
     */
    public function __construct(array $options, private readonly object $models)
    {
        foreach (['class', 'key', 'folder'] as $required) {
            if (!isset($options[$required]) || !\is_string($options[$required]) || $options[$required] === '') {
                throw new \InvalidArgumentException("the data_object applier needs the option {$required}");
            }
        }
        $this->class = self::dataObjectClass((string) $options['class'], 'class');
        $this->keyField = self::fieldName((string) $options['key'], 'key');
        $this->folder = (string) $options['folder'];
        $keyAccepts = self::accepts($this->class, $this->keyField, 'key');
        if (!\in_array('string', $keyAccepts, true)) {
            throw new \InvalidArgumentException("option key: {$this->keyField} on {$options['class']} takes " . implode('|', $keyAccepts) . ', not text; the key field must be a text field (Input)');
        }
        $deletions = (string) ($options['deletions'] ?? 'unpublish');
        if (!\in_array($deletions, ['unpublish', 'delete'], true)) {
            throw new \InvalidArgumentException("option deletions: {$deletions} is neither unpublish nor delete");
        }
        foreach ((array) ($options['fields'] ?? []) as $source => $map) {
            $this->fields[(string) $source] = $this->checkField((string) $source, \is_array($map) ? $map : ['field' => (string) $map]);
        }
        $this->options = $options;
    }

    public function apply(Chunk $chunk): void
    {
        $versioningWasOn = Version::isEnabled();
        if (!(bool) ($this->options['versioning'] ?? false)) {
            Version::disable();
        }
        try {
            $chunk->each(function (int $i, string $text) use ($chunk): void {
                $record = Chunk::decode($text);
                $offset = $chunk->firstRecord + $i;
                if (Chunk::isTombstone($record)) {
                    $this->remove($record, $offset, $chunk->inCrashWindow($i));
                } else {
                    $this->upsert($record, $offset, $chunk->inCrashWindow($i));
                }
            });
        } finally {
            if ($versioningWasOn) {
                Version::enable();
            }
        }
    }

    /** @param array<string, mixed> $record */
    private function upsert(array $record, int $offset, bool $mayBeApplied): void
    {
        $key = $this->key($record, $offset, 'the key field is missing or empty');
        $object = $this->find($this->class, $this->keyField, $key, $offset, $this->keyField);
        $values = [];
        foreach ($this->fields as $source => $map) {
            if (\array_key_exists($source, $record)) {
                $values[$source] = $this->value($record[$source], $map, $offset, $source);
            }
        }
        $publish = (bool) ($this->options['publish'] ?? true);
        if ($mayBeApplied && $object !== null && $this->holds($object, $values, $publish)) {
            return;  // caught between its save and its mark on an earlier delivery: the object holds it already
        }
        $objectKey = null;
        if ($object === null) {
            $objectKey = ElementService::getValidKey($key, 'object');
            if ($objectKey === '') {
                throw new RecordRejected($offset, $this->keyField, "the key {$this->quote($key)} gives no object key (Pimcore's getValidKey leaves nothing of it)");
            }
            $object = $this->models->build($this->class);
            $object->setKey($objectKey);
            $object->setParent($this->folder());
            $object->{self::setter($this->keyField)}($key);
        }
        try {
            foreach ($values as $source => $value) {
                $map = $this->fields[$source];
                try {
                    if ($map['language'] !== null) {
                        $object->{self::setter($map['field'])}($value, $map['language']);
                    } else {
                        $object->{self::setter($map['field'])}($value);
                    }
                } catch (\TypeError | \InvalidArgumentException $e) {
                    throw new RecordRejected($offset, $source, self::reason($e));
                }
            }
            $object->setPublished($publish);
            $this->save($object, $offset, $objectKey, $key);
        } catch (RecordRejected $e) {
            $this->forget($object);

            throw $e;
        }
    }

    /** Save through Pimcore's save() (its own transaction and deadlock retry); a refusal names the field. */
    private function save(Concrete $object, int $offset, ?string $objectKey, string $key): void
    {
        try {
            $object->save();
        } catch (ValidationException $e) {
            $unique = self::uniqueField($e);
            if ($unique !== null) {  // Pimcore says only "unique constraint violation"; its index names the field
                throw new RecordRejected($offset, $this->sourceOf($unique, null), "unique constraint violation: another object holds this {$unique} (a unique field, compared in its table's collation, so case and accents do not tell two values apart)");
            }

            throw new RecordRejected($offset, $this->fieldOf($e), self::reason($e));
        } catch (DuplicateFullPathException $e) {
            throw new RecordRejected($offset, $this->keyField, "the object key {$this->quote((string) $objectKey)} (from {$this->keyField} {$this->quote($key)}) is taken in {$this->folder} by another object: Pimcore's getValidKey maps / < > and 4-byte characters to - and cuts at 255 characters, so two keys can meet there");
        } catch (\Exception $e) {  // an \Error is a bug, not the record's: it reaches Messenger
            self::rethrowTheDatabases($e);  // the chunk is retried from this record

            throw new RecordRejected($offset, null, 'save failed: ' . self::reason($e));
        }
    }

    /** @param array<string, mixed> $record */
    private function remove(array $record, int $offset, bool $mayBeApplied): void
    {
        $key = $this->key($record, $offset, 'a tombstone without its key');
        $object = $this->find($this->class, $this->keyField, $key, $offset, $this->keyField);
        if ($object === null) {
            return;  // gone already (or deleted on an earlier delivery)
        }
        try {
            if (($this->options['deletions'] ?? 'unpublish') === 'delete') {
                if (!(bool) ($this->options['delete_children'] ?? false) && $object->hasChildren(['object', 'variant', 'folder'], true)) {
                    throw new RecordRejected($offset, $this->keyField, "the object for {$this->quote($key)} has children, which Pimcore would delete with it; set the applier's delete_children: true to allow that");
                }
                $object->delete();
            } elseif (!$mayBeApplied || $object->getPublished()) {
                $object->setPublished(false);
                $object->save();
            }
        } catch (RecordRejected $e) {
            throw $e;
        } catch (ValidationException $e) {
            $this->forget($object);

            throw new RecordRejected($offset, $this->fieldOf($e), 'the tombstone failed: ' . self::reason($e));
        } catch (\Exception $e) {
            self::rethrowTheDatabases($e);
            $this->forget($object);

            throw new RecordRejected($offset, null, 'the tombstone failed: ' . self::reason($e));
        }
    }

    /**
     * A failure of the database rather than of the record leaves the applier: the chunk stops (nothing of
     * this record is marked) and is retried from this record. That is a deadlock or lock wait Pimcore gave up
     * on, a lost or refused connection, and any other driver error except a data or integrity one (SQLSTATE
     * class 22 or 23, which this record's values cause): an interrupted query (KILL QUERY,
     * max_statement_time: 70100), a connection lost during a query (2013, HY000), a read-only server in a
     * failover, a full disk. Refusing the record for those would put a good record in the reject file.
     */
    private static function rethrowTheDatabases(\Exception $e): void
    {
        if ($e instanceof RetryableException || $e instanceof ConnectionException || $e instanceof ConnectionLost) {
            throw $e;
        }
        if ($e instanceof DriverException && !\in_array(substr((string) $e->getSQLState(), 0, 2), ['22', '23'], true)) {
            throw $e;
        }
    }

    /** @param array<string, mixed> $record */
    private function key(array $record, int $offset, string $missing): string
    {
        // Keys are text end to end (docs/protocol.md, "Keys"): an integer is its decimal text.
        return Chunk::key($record, $this->keyField) ?? throw new RecordRejected($offset, $this->keyField, $missing);
    }

    /**
     * The one object whose field equals `$value` exactly: a binary comparison beside the indexed one, so
     * neither the table's case- and accent-insensitive collation nor its trailing-space padding lets one key
     * find another. Loaded fresh (force), never a copy a refused record left in Pimcore's runtime cache.
     *
     * @param class-string $class
     */
    private function find(string $class, string $field, string $value, int $offset, string $source): ?Concrete
    {
        $listing = $this->models->build($class . '\\Listing');  // as getList() builds it: overrides hold
        $listing->setCondition("`{$field}` = ? AND BINARY `{$field}` = BINARY ?", [$value, $value]);
        $listing->setUnpublished(true);
        $listing->setLimit(2);
        $ids = $listing->loadIdList();
        if (\count($ids) > 1) {
            throw new RecordRejected($offset, $source, "two objects of " . self::short($class) . " hold {$field} {$this->quote($value)}; the key must name one");
        }
        if ($ids === []) {
            return null;
        }
        $object = $class::getById((int) $ids[0], ['force' => true]);

        return $object instanceof Concrete ? $object : null;
    }

    /** Drop a refused object from Pimcore's runtime cache: a later record of its key must not save its state. */
    private function forget(Concrete $object): void
    {
        $id = $object->getId();
        if ($id !== null && $id > 0) {
            RuntimeCache::set('object_' . $id, null);
        }
    }

    /** The parent folder; a folder another worker created at the same moment is found, not created twice. */
    private function folder(): \Pimcore\Model\DataObject\Folder
    {
        try {
            return ObjectService::createFolderByPath($this->folder);
        } catch (RetryableException | ConnectionException | ConnectionLost $e) {
            throw $e;
        } catch (\Exception) {
            return ObjectService::createFolderByPath($this->folder);  // it exists now: found by its path
        }
    }

    /**
     * Whether the object already holds what the record would give it (its mapped fields and publish state),
     * compared strictly after normalising dates to their instant and related objects to their ids. Used
     * only for the one record that a crash may have caught between its save and its mark.
     *
     * @param array<string, mixed> $values
     */
    private function holds(Concrete $object, array $values, bool $publish): bool
    {
        if ($object->getPublished() !== $publish) {
            return false;
        }
        foreach ($values as $source => $value) {
            $map = $this->fields[$source];
            $getter = 'get' . ucfirst($map['field']);
            $now = $map['language'] !== null ? $object->{$getter}($map['language']) : $object->{$getter}();
            if (self::normal($now) !== self::normal($value)) {
                return false;
            }
        }

        return true;
    }

    private static function normal(mixed $value): mixed
    {
        return match (true) {
            $value instanceof \DateTimeInterface => 'date:' . $value->format('U.u'),
            $value instanceof Concrete => 'object:' . $value->getId(),
            \is_array($value) => array_map(self::normal(...), $value),
            \is_object($value) => 'object:' . spl_object_id($value),
            default => $value,
        };
    }

    /** @param array{field: string, type: string, language: ?string, accepts: list<string>, class?: class-string, key?: string} $map */
    private function value(mixed $value, array $map, int $offset, string $source): mixed
    {
        if ($value === null) {
            return null;
        }

        return match ($map['type']) {
            'string', 'select', 'localized' => \is_string($value) || \is_int($value) || \is_float($value)
                ? (string) $value : throw new RecordRejected($offset, $source, 'expected text'),
            'number' => $this->number($value, $map['accepts'], $offset, $source),
            'boolean' => \is_bool($value) ? $value : throw new RecordRejected($offset, $source, 'expected true or false'),
            'date' => $this->date($value, $map['accepts'], $offset, $source),
            'multiselect' => array_map(
                static fn ($v) => \is_scalar($v) ? (string) $v : throw new RecordRejected($offset, $source, 'expected a list of texts'),
                array_values(\is_array($value) ? $value : [$value]),
            ),
            'relation' => $this->related($map, $value, $offset, $source),
            'relations' => array_map(fn ($v) => $this->related($map, $v, $offset, $source), array_values((array) $value)),
        };
    }

    /**
     * A number as the setter takes it: an int for an integer field (a fraction refused), the exact decimal
     * text for a decimal field (decimalPrecision or decimalSize set: the setter takes ?string), else a float.
     *
     * @param list<string> $accepts
     */
    private function number(mixed $value, array $accepts, int $offset, string $source): int|float|string
    {
        if (\is_bool($value) || !(\is_int($value) || \is_float($value) || (\is_string($value) && is_numeric($value)))) {
            throw new RecordRejected($offset, $source, 'expected a number');
        }
        if (\in_array('int', $accepts, true)) {
            if (\is_int($value)) {
                return $value;
            }
            $text = \is_string($value) ? trim($value) : self::decimal($value);
            if (preg_match('/^-?\d+$/', $text) !== 1 || (string) (int) $text !== ltrim($text, '+')) {
                throw new RecordRejected($offset, $source, "expected an integer, not {$text}");
            }

            return (int) $text;
        }
        if (\in_array('string', $accepts, true)) {
            return \is_string($value) ? trim($value) : (\is_int($value) ? (string) $value : self::decimal($value));
        }

        return (float) $value;
    }

    /** A float's shortest exact text (what the file said, for every number a double holds). */
    private static function decimal(float $value): string
    {
        $text = json_encode($value, \JSON_THROW_ON_ERROR | \JSON_PRESERVE_ZERO_FRACTION);

        return str_ends_with($text, '.0') ? substr($text, 0, -2) : $text;
    }

    /** @param list<string> $accepts */
    private function date(mixed $value, array $accepts, int $offset, string $source): \DateTimeInterface
    {
        $iso = '/^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2})?)?$/';
        if (!\is_string($value) || preg_match($iso, $value) !== 1) {
            throw new RecordRejected($offset, $source, 'not a date (expected ISO 8601, e.g. 2026-01-02 or 2026-01-02T10:00:00Z)');
        }
        $class = $accepts[0];  // checked when built: a DateTimeInterface class (Carbon in generated classes)
        try {
            return new $class($value);
        } catch (\Exception) {
            throw new RecordRejected($offset, $source, 'not a date');
        }
    }

    /** @param array{field: string, type: string, language: ?string, accepts: list<string>, class?: class-string, key?: string} $map */
    private function related(array $map, mixed $key, int $offset, string $source): Concrete
    {
        $key = Chunk::key(['key' => $key], 'key') ?? throw new RecordRejected($offset, $source, 'expected the key of a related object');
        $found = $this->find($map['class'] ?? '', (string) ($map['key'] ?? 'key'), $key, $offset, $source);
        if ($found === null) {
            throw new RecordRejected($offset, $source, 'no ' . self::short($map['class'] ?? '') . " with {$map['key']} {$this->quote($key)}");
        }

        return $found;
    }

    /**
     * The record's field that Pimcore refused. Pimcore's message: "Validation failed: Empty mandatory field
     * [ name ][ localizedfields-de ] / Value in field [ code ] is longer than 190 characters"; the first
     * field named, mapped back to the record's field that fills it.
     */
    private function fieldOf(ValidationException $e): ?string
    {
        $messages = [$e->getMessage()];
        foreach ($e->getSubItems() as $item) {
            $messages[] = $item->getMessage();
        }
        foreach ($messages as $message) {
            if (preg_match('/field \[\s*(\w+)\s*\](?:\[\s*localizedfields-([\w-]+)\s*\])?/', $message, $m) !== 1) {
                continue;
            }

            return $this->sourceOf($m[1], $m[2] ?? null);
        }

        return null;
    }

    /** The record's field that fills object field `$field` (in `$language`), else the object's field named. */
    private function sourceOf(string $field, ?string $language): string
    {
        foreach ($this->fields as $source => $map) {
            if ($map['field'] === $field && ($language === null || $language === '' || $map['language'] === $language)) {
                return $source;
            }
        }
        if ($field === $this->keyField) {
            return $this->keyField;
        }

        return $field . (($language ?? '') !== '' ? ".{$language}" : '');
    }

    /**
     * The field whose unique index a save ran into: Pimcore turns the driver's UniqueConstraintViolation into
     * ValidationException('unique constraint violation') (AbstractObject.php:553-555) and keeps it as the
     * previous exception, whose message names the index, `u_index_<field>` (ClassDefinition/Dao.php:180).
     */
    private static function uniqueField(ValidationException $e): ?string
    {
        for ($p = $e->getPrevious(); $p !== null; $p = $p->getPrevious()) {
            if (preg_match("/for key '(?:[^']*\\.)?u_index_(\\w+)'/", $p->getMessage(), $m) === 1) {
                return $m[1];
            }
        }

        return null;
    }

    /** A refusal's reason: the exception's message without server paths, bounded. */
    private static function reason(\Throwable $e): string
    {
        $message = preg_replace('~(?:[A-Za-z]:)?(?:[\\\\/][\w.\-@]+){2,}[\\\\/]?~', '[path]', $e->getMessage()) ?? '';

        return mb_substr($message, 0, 1000);
    }

    private function quote(string $value): string
    {
        return '"' . mb_substr($value, 0, 80) . (mb_strlen($value) > 80 ? '…' : '') . '"';
    }

    /**
     * @param array<string, mixed> $map
     *
     * @return array{field: string, type: string, language: ?string, accepts: list<string>, class?: class-string, key?: string}
     */
    private function checkField(string $source, array $map): array
    {
        $where = "fields.{$source}";
        $type = (string) ($map['type'] ?? 'string');
        if (!\in_array($type, self::TYPES, true)) {
            throw new \InvalidArgumentException("{$where}.type: {$type} is not one of " . implode(', ', self::TYPES));
        }
        $field = self::fieldName((string) ($map['field'] ?? $source), "{$where}.field");
        $language = isset($map['language']) ? (string) $map['language'] : null;
        if ($type === 'localized' && $language === null) {
            throw new \InvalidArgumentException("{$where}.language: a localized field needs its language");
        }
        $accepts = self::accepts($this->class, $field, $where, $language !== null);
        $fits = match ($type) {
            'string', 'select', 'localized' => \in_array('string', $accepts, true),
            'number' => array_intersect(['int', 'float', 'string'], $accepts) !== [],
            'boolean' => \in_array('bool', $accepts, true),
            'date' => self::dateClass($accepts) !== null,
            'multiselect', 'relations' => \in_array('array', $accepts, true),
            'relation' => array_filter($accepts, static fn (string $t): bool => class_exists($t) || interface_exists($t)) !== [],
        };
        if (!$fits) {
            throw new \InvalidArgumentException("{$where}: " . self::short($this->class) . '::' . self::setter($field) . '() takes ' . implode('|', $accepts) . ", which a {$type} is not");
        }
        $checked = ['field' => $field, 'type' => $type, 'language' => $language, 'accepts' => $type === 'date' ? [(string) self::dateClass($accepts)] : $accepts];
        if ($type === 'relation' || $type === 'relations') {
            $checked['class'] = self::dataObjectClass((string) ($map['class'] ?? ''), "{$where}.class");
            $checked['key'] = self::fieldName((string) ($map['key'] ?? ''), "{$where}.key");
            self::accepts($checked['class'], $checked['key'], "{$where}.key");
        }

        return $checked;
    }

    /** @param list<string> $accepts */
    private static function dateClass(array $accepts): ?string
    {
        foreach ($accepts as $type) {
            if (is_a($type, \DateTimeInterface::class, true) && !(new \ReflectionClass($type))->isAbstract() && !interface_exists($type)) {
                return $type;
            }
        }

        return null;
    }

    /** @return class-string */
    private static function dataObjectClass(string $name, string $where): string
    {
        $class = self::NS . $name;
        if (preg_match('/^[A-Za-z_]\w*$/', $name) !== 1 || !class_exists($class) || !is_subclass_of($class, Concrete::class)) {
            throw new \InvalidArgumentException("{$where}: no DataObject class {$name} ({$class})");
        }

        return $class;
    }

    private static function fieldName(string $name, string $where): string
    {
        if (preg_match('/^[A-Za-z_]\w*$/', $name) !== 1) {
            throw new \InvalidArgumentException("{$where}: {$name} is not a field name");
        }

        return $name;
    }

    /**
     * The types the field's generated setter declares for its value (Pimcore's generated classes are typed:
     * ?\Carbon\Carbon for a date, ?string for a decimal, ?int for an integer, ?float for other numbers).
     *
     * @param class-string $class
     *
     * @return list<string>
     */
    private static function accepts(string $class, string $field, string $where, bool $localized = false): array
    {
        $setter = self::setter($field);
        if (!method_exists($class, $setter)) {
            throw new \InvalidArgumentException("{$where}: " . self::short($class) . " has no field {$field} (no {$setter}())");
        }
        $params = (new \ReflectionMethod($class, $setter))->getParameters();
        if ($localized && \count($params) < 2) {
            throw new \InvalidArgumentException("{$where}: {$field} on " . self::short($class) . ' is not localized (its setter takes no language)');
        }
        $type = isset($params[0]) ? $params[0]->getType() : null;
        if ($type === null) {
            return ['mixed'];
        }
        $types = $type instanceof \ReflectionUnionType ? $type->getTypes() : [$type];
        $names = [];
        foreach ($types as $t) {
            if ($t instanceof \ReflectionNamedType && $t->getName() !== 'null') {
                $names[] = $t->getName();
            }
        }
        if (\in_array('mixed', $names, true)) {
            return ['string', 'int', 'float', 'bool', 'array', \DateTimeImmutable::class, Concrete::class];
        }

        return $names;
    }

    private static function setter(string $field): string
    {
        return 'set' . ucfirst($field);
    }

    private static function short(string $class): string
    {
        return substr($class, (int) strrpos($class, '\\') + 1);
    }
}
