<?php

declare(strict_types=1);

namespace Pimcore\Model\DataObject\ClassDefinition\Data;

use Pimcore\Model\DataObject\ClassDefinition\Data;

/** Stand-in for ClassDefinition\Data\Select (Select.php at v11.4.1; tests only): setter `?string`, varchar(190). */
class Select extends Data implements TypeDeclarationSupportInterface
{
    public int $columnLength = 190;

    public function getFieldType(): string
    {
        return 'select';
    }

    public function getColumnType(): string
    {
        return "varchar({$this->columnLength})";
    }

    public function getParameterTypeDeclaration(): ?string
    {
        return '?string';
    }

    public function getReturnTypeDeclaration(): ?string
    {
        return '?string';
    }

    public function getPhpdocInputType(): ?string
    {
        return 'string|null';
    }

    public function getPhpdocReturnType(): ?string
    {
        return 'string|null';
    }
}
