<?php

declare(strict_types=1);

namespace Pimcore\Model\DataObject;

use Pimcore\Model\Element\ValidationException;

/**
 * Stand-in for Pimcore 11's DataObject\Concrete (tests only), with the calls the data_object applier
 * makes: setKey, setParent, set(field, value, language), setPublished, save. Saved objects live in a
 * static store per class; `save()` refuses what a class's `$mandatory` fields lack, as Pimcore's
 * validation does.
 */
abstract class Concrete
{
    /** @var array<class-string, list<static>> */
    public static array $saved = [];
    /** @var list<string> */
    public static array $mandatory = [];
    public static int $saves = 0;

    public ?string $key = null;
    public ?Folder $parent = null;
    public bool $published = false;
    /** @var array<string, mixed> */
    public array $values = [];
    public bool $versioned = true;

    public function setKey(string $key): static
    {
        $this->key = $key;

        return $this;
    }

    public function setParent(?Folder $parent): static
    {
        $this->parent = $parent;

        return $this;
    }

    public function set(string $fieldName, mixed $value, ?string $language = null): mixed
    {
        $this->values[$language === null ? $fieldName : "{$fieldName}.{$language}"] = $value;

        return $this;
    }

    public function get(string $fieldName, ?string $language = null): mixed
    {
        return $this->values[$language === null ? $fieldName : "{$fieldName}.{$language}"] ?? null;
    }

    public function setPublished(bool $published): static
    {
        $this->published = $published;

        return $this;
    }

    public function delete(): void
    {
        self::$saved[static::class] = array_values(array_filter(self::$saved[static::class] ?? [], fn ($o) => $o !== $this));
    }

    public function save(array $parameters = []): static
    {
        foreach (static::$mandatory as $field) {
            if (($this->values[$field] ?? null) === null) {
                throw new ValidationException("Validation failed: Empty mandatory field [ {$field} ]");
            }
        }
        $this->versioned = \Pimcore\Model\Version::$enabled;
        ++self::$saves;
        if (!\in_array($this, self::$saved[static::class] ?? [], true)) {
            self::$saved[static::class][] = $this;
        }

        return $this;
    }
}
