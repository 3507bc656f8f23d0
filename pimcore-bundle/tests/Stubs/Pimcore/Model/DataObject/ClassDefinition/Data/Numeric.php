<?php

declare(strict_types=1);

namespace Pimcore\Model\DataObject\ClassDefinition\Data;

use Pimcore\Model\DataObject\ClassDefinition\Data;
use Pimcore\Model\Element\ValidationException;

/**
 * Stand-in for ClassDefinition\Data\Numeric (Numeric.php at v11.4.1; tests only). The generated setter's
 * type (getPhpdocType(), Numeric.php:100-111): `?int` when `integer` is set, else `?string` when
 * decimalSize or decimalPrecision is set (a DECIMAL column), else `?float`. preSetData() rounds to
 * decimalPrecision (returning a float). checkValidity() (349-381): mandatory, and non-numeric data
 * always; PHP_INT_MAX, integer, min, max and unsigned only when the mandatory check is not omitted.
 */
class Numeric extends Data implements TypeDeclarationSupportInterface
{
    public bool $integer = false;
    public bool $unsigned = false;
    public ?float $minValue = null;
    public ?float $maxValue = null;
    public ?int $decimalSize = null;
    public ?int $decimalPrecision = null;

    public static function integer(string $name, bool $mandatory = false): self
    {
        $fd = self::named($name, $mandatory);
        $fd->integer = true;

        return $fd;
    }

    public static function decimal(string $name, int $size, int $precision, bool $mandatory = false): self
    {
        $fd = self::named($name, $mandatory);
        $fd->decimalSize = $size;
        $fd->decimalPrecision = $precision;

        return $fd;
    }

    public function getFieldType(): string
    {
        return 'numeric';
    }

    public function getInteger(): bool
    {
        return $this->integer;
    }

    public function getDecimalSize(): ?int
    {
        return $this->decimalSize;
    }

    public function getDecimalPrecision(): ?int
    {
        return $this->decimalPrecision;
    }

    public function getUnsigned(): bool
    {
        return $this->unsigned;
    }

    public function getMinValue(): ?float
    {
        return $this->minValue;
    }

    public function getMaxValue(): ?float
    {
        return $this->maxValue;
    }

    private function isDecimalType(): bool
    {
        return $this->decimalSize !== null || $this->decimalPrecision !== null;
    }

    private function getPhpdocType(): string
    {
        return $this->integer ? 'int' : ($this->isDecimalType() ? 'string' : 'float');
    }

    public function getColumnType(): string
    {
        if ($this->integer) {
            return 'bigint(20)' . ($this->unsigned ? ' unsigned' : '');
        }
        if ($this->isDecimalType()) {
            return 'decimal(' . ($this->decimalSize ?? 64) . ', ' . ($this->decimalPrecision ?? 0) . ')';
        }

        return 'double';
    }

    public function isEmpty(mixed $data): bool
    {
        return !is_numeric($data);
    }

    private function toNumeric(mixed $value): float|int|string
    {
        if ($this->integer) {
            return (int) $value;
        }
        $value = str_replace(',', '.', (string) $value);
        if ($this->isDecimalType()) {
            return $value;
        }

        return str_contains($value, '.') ? (float) $value : (int) $value;
    }

    public function preSetData(mixed $container, mixed $data, array $params = []): mixed
    {
        if ($data !== null && $this->decimalPrecision) {
            $data = round((float) $data, $this->decimalPrecision);
        }

        return $data;
    }

    public function checkValidity(mixed $data, bool $omitMandatoryCheck = false, array $params = []): void
    {
        if (!$omitMandatoryCheck && $this->mandatory && $this->isEmpty($data)) {
            throw new ValidationException('Empty mandatory field [ ' . $this->name . ' ]');
        }
        if (!$this->isEmpty($data) && !is_numeric($data)) {
            throw new ValidationException('field [' . $this->name . ' ] - invalid numeric data [' . $data . '] ');
        }
        if (!$this->isEmpty($data) && !$omitMandatoryCheck) {
            $data = $this->toNumeric($data);
            if ($data >= \PHP_INT_MAX) {
                throw new ValidationException('Value exceeds PHP_INT_MAX please use an input data type instead of numeric!');
            }
            if ($this->integer && str_contains((string) $data, '.')) {
                throw new ValidationException('Value in field [ ' . $this->name . ' ] is not an integer');
            }
            if ($this->minValue !== null && $this->minValue > $data) {
                throw new ValidationException('Value in field [ ' . $this->name . ' ] is not at least ' . $this->minValue);
            }
            if ($this->maxValue !== null && $data > $this->maxValue) {
                throw new ValidationException('Value in field [ ' . $this->name . ' ] is bigger than ' . $this->maxValue);
            }
            if ($this->unsigned && $data < 0) {
                throw new ValidationException('Value in field [ ' . $this->name . ' ] is not unsigned (bigger than 0)');
            }
        }
    }

    public function getDataFromResource(array $row, ?\Pimcore\Model\DataObject\Concrete $object = null, array $params = []): mixed
    {
        $data = $row[$this->name] ?? null;
        if ($data === null) {
            return null;
        }

        return $this->integer ? (int) $data : ($this->isDecimalType() ? (string) $data : (float) $data);
    }

    public function getParameterTypeDeclaration(): ?string
    {
        return '?' . $this->getPhpdocType();
    }

    public function getReturnTypeDeclaration(): ?string
    {
        return '?' . $this->getPhpdocType();
    }

    public function getPhpdocInputType(): ?string
    {
        return $this->getPhpdocType() . '|null';
    }

    public function getPhpdocReturnType(): ?string
    {
        return $this->getPhpdocType() . '|null';
    }
}
