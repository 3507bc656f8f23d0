<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Apply;

use Doctrine\DBAL\Exception\RetryableException;
use Pimcore\Model\DataObject\Concrete;
use Pimcore\Model\DataObject\Service as ObjectService;
use Pimcore\Model\Element\Service as ElementService;
use Pimcore\Model\Element\ValidationException;
use Pimcore\Model\Version;

/**
 * Upserts DataObjects of one class by a key field, in a parent folder, through a field map.
 *
 * Written against Pimcore 11's public API and kept thin: the calls it makes are exactly those the
 * stand-ins in tests/Stubs/ provide. It has not been run against a real Pimcore here.
 *
 * Options (from the bundle's `appliers` configuration):
 * - class: the DataObject class name (e.g. Product, for Pimcore\Model\DataObject\Product);
 * - key: the record field that identifies an object (e.g. sku), also the object's field of that name;
 * - folder: the parent folder's path (created if missing);
 * - publish: publish saved objects (default true);
 * - versioning: keep versions while loading (default false: Version::disable() around the chunk);
 * - deletions: what a tombstone (`"_deleted": true`, the key left the daemon's delta scope) does to its
 *   object: "unpublish" (default) or "delete"; an object already gone is fine;
 * - fields: record field => {field: object field, type: string|number|boolean|date|select|multiselect|
 *   localized|relation|relations, language?: for localized, class?/key?: for relations}.
 */
final class DataObjectApplier implements ApplierInterface
{
    /** @param array<string, mixed> $options */
    public function __construct(private readonly array $options)
    {
        foreach (['class', 'key', 'folder'] as $required) {
            if (!isset($options[$required]) || !\is_string($options[$required]) || $options[$required] === '') {
                throw new \InvalidArgumentException("the data_object applier needs the option {$required}");
            }
        }
    }

    public function apply(Chunk $chunk): void
    {
        $versioning = (bool) ($this->options['versioning'] ?? false);
        if (!$versioning) {
            Version::disable();
        }
        try {
            // Record by record: one Pimcore refuses is undone alone and listed in the ACK (protocol v1.1).
            $chunk->each(function (int $i, string $text) use ($chunk): void {
                $record = Chunk::decode($text);
                if (Chunk::isTombstone($record)) {
                    $this->remove($record, $chunk->firstRecord + $i);
                } else {
                    $this->upsert($record, $chunk->firstRecord + $i);
                }
            });
        } finally {
            if (!$versioning) {
                Version::enable();
            }
        }
    }

    /** @param array<string, mixed> $record */
    private function upsert(array $record, int $offset): void
    {
        $keyField = (string) $this->options['key'];
        $key = $record[$keyField] ?? null;
        if (!\is_scalar($key) || (string) $key === '') {
            throw new RecordRejected($offset, $keyField, 'the key field is missing or empty');
        }
        $class = 'Pimcore\\Model\\DataObject\\' . $this->options['class'];
        $object = $this->find($class, $keyField, (string) $key);
        if ($object === null) {
            /** @var Concrete $object */
            $object = new $class();
            $object->setKey(ElementService::getValidKey((string) $key, 'object'));
            $object->setParent(ObjectService::createFolderByPath((string) $this->options['folder']));
            $object->set($keyField, (string) $key);
        }
        foreach ((array) ($this->options['fields'] ?? []) as $source => $map) {
            if (!\array_key_exists($source, $record)) {
                continue;
            }
            $map = \is_array($map) ? $map : ['field' => (string) $map];
            $field = (string) ($map['field'] ?? $source);
            try {
                $object->set($field, $this->value($record[$source], $map, $offset, $field), $map['language'] ?? null);
            } catch (RecordRejected $e) {
                throw $e;
            } catch (\Throwable $e) {
                throw new RecordRejected($offset, $field, $e->getMessage());
            }
        }
        $object->setPublished((bool) ($this->options['publish'] ?? true));
        try {
            $object->save();
        } catch (ValidationException $e) {
            throw new RecordRejected($offset, $this->fieldOf($e), $e->getMessage());
        } catch (RetryableException $e) {
            throw $e;  // a deadlock is the database's, not the record's: the chunk is retried whole
        } catch (\Throwable $e) {
            throw new RecordRejected($offset, null, 'save failed: ' . $e->getMessage());
        }
    }

    /** @param array<string, mixed> $record */
    private function remove(array $record, int $offset): void
    {
        $keyField = (string) $this->options['key'];
        $key = $record[$keyField] ?? null;
        if (!\is_scalar($key) || (string) $key === '') {
            throw new RecordRejected($offset, $keyField, 'a tombstone without its key');
        }
        $object = $this->find('Pimcore\\Model\\DataObject\\' . $this->options['class'], $keyField, (string) $key);
        if ($object === null) {
            return;
        }
        $how = (string) ($this->options['deletions'] ?? 'unpublish');
        if ($how === 'delete') {
            $object->delete();
        } elseif ($how === 'unpublish') {
            $object->setPublished(false);
            $object->save();
        } else {
            throw new RecordRejected($offset, $keyField, "unknown deletions option {$how} (unpublish or delete)");
        }
    }

    private function find(string $class, string $field, string $value): ?Concrete
    {
        $listingClass = $class . '\\Listing';
        $listing = new $listingClass();
        $listing->setCondition("`{$field}` = ?", [$value]);
        $listing->setUnpublished(true);
        $listing->setLimit(1);
        $found = $listing->load();

        return $found[0] ?? null;
    }

    /** @param array<string, mixed> $map */
    private function value(mixed $value, array $map, int $offset, string $field): mixed
    {
        $type = (string) ($map['type'] ?? 'string');
        if ($value === null) {
            return null;
        }

        return match ($type) {
            'string', 'select', 'localized' => \is_scalar($value) ? (string) $value : throw new RecordRejected($offset, $field, 'expected text'),
            'number' => is_numeric($value) ? $value + 0 : throw new RecordRejected($offset, $field, 'expected a number'),
            'boolean' => \is_bool($value) ? $value : throw new RecordRejected($offset, $field, 'expected true or false'),
            'date' => $this->date($value, $offset, $field),
            'multiselect' => \is_array($value) ? array_map('strval', $value) : [(string) $value],
            'relation' => $this->related($map, (string) $value, $offset, $field),
            'relations' => array_map(fn ($v) => $this->related($map, (string) $v, $offset, $field), (array) $value),
            default => throw new RecordRejected($offset, $field, "unknown field type {$type} in the field map"),
        };
    }

    /** Pimcore's generated date setters take `?\Carbon\Carbon` and nothing else (Date.php:339 at v11.4.1). */
    private function date(mixed $value, int $offset, string $field): \Carbon\Carbon
    {
        try {
            return new \Carbon\Carbon((string) $value);
        } catch (\Exception) {
            throw new RecordRejected($offset, $field, 'not a date');
        }
    }

    /** @param array<string, mixed> $map */
    private function related(array $map, string $key, int $offset, string $field): Concrete
    {
        $class = 'Pimcore\\Model\\DataObject\\' . ($map['class'] ?? '');
        $found = $this->find($class, (string) ($map['key'] ?? 'key'), $key);
        if ($found === null) {
            throw new RecordRejected($offset, $field, "no {$map['class']} with {$map['key']} = {$key}");
        }

        return $found;
    }

    /**
     * The field a ValidationException names. Pimcore writes `[ name ]` (Input.php:222, Data.php:127), and for
     * a localized field appends the context, `[ name ][ localizedfields-de ]` (Localizedfields.php:703 and
     * ValidationException::getAggregatedMessage()): that one is reported as `name.de`.
     */
    private function fieldOf(ValidationException $e): ?string
    {
        foreach ([...$e->getSubItems(), $e] as $item) {
            if ($item instanceof ValidationException && preg_match('/\[\s*([\w.]+)\s*\](?:\[\s*localizedfields-([\w-]+)\s*\])?/', $item->getMessage(), $m)) {
                return isset($m[2]) ? "{$m[1]}.{$m[2]}" : $m[1];
            }
        }

        return null;
    }
}
