<?php

declare(strict_types=1);

namespace Pimcore\Model\DataObject\ClassDefinition\Data;

use Pimcore\Model\DataObject\ClassDefinition\Data;
use Pimcore\Model\DataObject\Localizedfield;
use Pimcore\Model\Element\ValidationException;

/**
 * Stand-in for ClassDefinition\Data\Localizedfields (Localizedfields.php at v11.4.1; tests only): the
 * container of the localized fields, stored one row per language in `object_localized_data_<classId>`.
 *
 * checkValidity() (Localizedfields.php:646-719) checks its fields for every required language ONLY when
 * the mandatory check is not omitted, that is only for published objects: an unpublished object may
 * carry a localized Input longer than its column. Each refusal gets the context `localizedfields-<lang>`,
 * and they are joined into one ValidationException whose message reads, for example,
 * `Empty mandatory field [ name ][ localizedfields-de ]`.
 */
class Localizedfields extends Data
{
    /** @var array<string, Data> */
    public array $children = [];
    /** @var list<string> the required languages (Pimcore: Tool::getRequiredLanguages(), the system's valid languages) */
    public array $languages = ['de', 'en'];

    /** @param list<Data> $children */
    public static function of(array $children, array $languages = ['de', 'en']): self
    {
        $fd = self::named('localizedfields');
        foreach ($children as $child) {
            $fd->children[$child->getName()] = $child;
        }
        $fd->languages = $languages;

        return $fd;
    }

    public function getFieldType(): string
    {
        return 'localizedfields';
    }

    public function getColumnType(): string
    {
        return '';
    }

    public function getColumns(): array
    {
        return [];
    }

    /** @return array<string, Data> */
    public function getFieldDefinitions(array $context = []): array
    {
        return $this->children;
    }

    public function getFieldDefinition(string $name, array $context = []): ?Data
    {
        return $this->children[$name] ?? null;
    }

    public function checkValidity(mixed $data, bool $omitMandatoryCheck = false, array $params = []): void
    {
        if ($omitMandatoryCheck) {
            return;
        }
        $exceptions = [];
        foreach ($this->languages as $language) {
            foreach ($this->children as $fd) {
                try {
                    $value = $data instanceof Localizedfield ? $data->getLocalizedValue($fd->getName(), $language) : null;
                    $fd->checkValidity($value, false, $params);
                } catch (ValidationException $ve) {
                    $ve->addContext($this->getName() . '-' . $language);
                    $exceptions[] = $ve;
                }
            }
        }
        if ($exceptions !== []) {
            throw new ValidationException(implode(' / ', array_map(static fn (ValidationException $e): string => $e->getAggregatedMessage(), $exceptions)));
        }
    }
}
