<?php

declare(strict_types=1);

namespace Pimcore\Model\DataObject;

/**
 * Stand-in for Pimcore\Model\DataObject\Localizedfield (tests only): an object's localized values, by
 * language. A value set without a language goes to the current locale, here `$defaultLanguage` (Pimcore
 * asks its LocaleService; a CLI worker gets the system's default language).
 */
class Localizedfield
{
    public static string $defaultLanguage = 'en';

    /** @var array<string, array<string, mixed>> language => field => value */
    protected array $items = [];

    /** @return array<string, array<string, mixed>> */
    public function getItems(): array
    {
        return $this->items;
    }

    /** @param array<string, array<string, mixed>> $items */
    public function setItems(array $items): static
    {
        $this->items = $items;

        return $this;
    }

    public function getLocalizedValue(string $name, ?string $language = null, bool $ignoreFallbackLanguage = false): mixed
    {
        return $this->items[$language ?? self::$defaultLanguage][$name] ?? null;
    }

    public function setLocalizedValue(string $name, mixed $data, ?string $language = null, bool $markFieldAsDirty = true): static
    {
        $this->items[$language ?? self::$defaultLanguage][$name] = $data;

        return $this;
    }
}
