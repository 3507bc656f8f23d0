<?php

declare(strict_types=1);

namespace Pimcore\Model\DataObject\ClassDefinition\Data;

use Pimcore\Model\DataObject\ClassDefinition\Data;
use Pimcore\Model\DataObject\Concrete;

/** Stand-in for ClassDefinition\Data\Checkbox (Checkbox.php at v11.4.1; tests only): setter `?bool`, tinyint(1). */
class Checkbox extends Data implements TypeDeclarationSupportInterface
{
    public function getFieldType(): string
    {
        return 'checkbox';
    }

    public function getColumnType(): string
    {
        return 'tinyint(1)';
    }

    public function getDataForResource(mixed $data, ?Concrete $object = null, array $params = []): array
    {
        return [$this->name => $data === null ? null : (int) $data];
    }

    public function getDataFromResource(array $row, ?Concrete $object = null, array $params = []): mixed
    {
        return isset($row[$this->name]) ? (bool) $row[$this->name] : null;
    }

    public function getParameterTypeDeclaration(): ?string
    {
        return '?bool';
    }

    public function getReturnTypeDeclaration(): ?string
    {
        return '?bool';
    }

    public function getPhpdocInputType(): ?string
    {
        return 'bool|null';
    }

    public function getPhpdocReturnType(): ?string
    {
        return 'bool|null';
    }
}
