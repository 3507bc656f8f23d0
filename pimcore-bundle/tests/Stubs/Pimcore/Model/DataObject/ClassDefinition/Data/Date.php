<?php

declare(strict_types=1);

namespace Pimcore\Model\DataObject\ClassDefinition\Data;

use Carbon\Carbon;
use Pimcore\Model\DataObject\ClassDefinition\Data;
use Pimcore\Model\DataObject\Concrete;

/**
 * Stand-in for ClassDefinition\Data\Date (Date.php at v11.4.1; tests only): the generated setter takes
 * `?\Carbon\Carbon` (Date.php:339-342), nothing else (no string, no DateTimeImmutable, no plain
 * DateTime); stored as a Unix timestamp in a bigint(20) column (columnType, Date.php:47).
 */
class Date extends Data implements TypeDeclarationSupportInterface
{
    public function getFieldType(): string
    {
        return 'date';
    }

    public function getColumnType(): string
    {
        return 'bigint(20)';
    }

    public function getDataForResource(mixed $data, ?Concrete $object = null, array $params = []): array
    {
        return [$this->name => $data instanceof Carbon ? $data->getTimestamp() : null];
    }

    public function getDataFromResource(array $row, ?Concrete $object = null, array $params = []): mixed
    {
        $ts = $row[$this->name] ?? null;
        if ($ts === null) {
            return null;
        }
        $date = new Carbon();
        $date->setTimestamp((int) $ts);

        return $date;
    }

    public function getParameterTypeDeclaration(): ?string
    {
        return '?\\' . Carbon::class;
    }

    public function getReturnTypeDeclaration(): ?string
    {
        return '?\\' . Carbon::class;
    }

    public function getPhpdocInputType(): ?string
    {
        return '\\' . Carbon::class . '|null';
    }

    public function getPhpdocReturnType(): ?string
    {
        return '\\' . Carbon::class . '|null';
    }
}
