<?php

declare(strict_types=1);

namespace Pimcore\Model\DataObject\ClassDefinition\Data;

use Pimcore\Model\DataObject\ClassDefinition\Data;
use Pimcore\Model\DataObject\Concrete;

/** Stand-in for ClassDefinition\Data\Multiselect (Multiselect.php at v11.4.1; tests only): setter `?array`, text `,a,b,`. */
class Multiselect extends Data implements TypeDeclarationSupportInterface
{
    public function getFieldType(): string
    {
        return 'multiselect';
    }

    public function getColumnType(): string
    {
        return 'text';
    }

    public function getDataForResource(mixed $data, ?Concrete $object = null, array $params = []): array
    {
        return [$this->name => \is_array($data) && $data !== [] ? ',' . implode(',', $data) . ',' : null];
    }

    public function getDataFromResource(array $row, ?Concrete $object = null, array $params = []): mixed
    {
        $raw = $row[$this->name] ?? null;

        return $raw === null ? null : array_values(array_filter(explode(',', (string) $raw), static fn (string $v): bool => $v !== ''));
    }

    public function getParameterTypeDeclaration(): ?string
    {
        return '?array';
    }

    public function getReturnTypeDeclaration(): ?string
    {
        return '?array';
    }

    public function getPhpdocInputType(): ?string
    {
        return 'array|null';
    }

    public function getPhpdocReturnType(): ?string
    {
        return 'array|null';
    }
}
