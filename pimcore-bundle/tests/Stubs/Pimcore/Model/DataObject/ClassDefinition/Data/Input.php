<?php

declare(strict_types=1);

namespace Pimcore\Model\DataObject\ClassDefinition\Data;

use Pimcore\Model\DataObject\ClassDefinition\Data;
use Pimcore\Model\Element\ValidationException;

/**
 * Stand-in for ClassDefinition\Data\Input (Input.php at v11.4.1; tests only): setter `?string`, a
 * varchar(columnLength) column (190 unless set). checkValidity() (Input.php:201-227): the regex only when
 * the mandatory check is not omitted, but the length ALWAYS, published or not ("Value in field [ x ] is
 * longer than N characters", counted in characters).
 */
class Input extends Data implements TypeDeclarationSupportInterface
{
    public int $columnLength = 190;
    public string $regex = '';

    public static function sized(string $name, int $columnLength, bool $mandatory = false): self
    {
        $fd = self::named($name, $mandatory);
        $fd->columnLength = $columnLength;

        return $fd;
    }

    /** A field marked unique: Pimcore adds a unique index on its column (compared in the table's collation). */
    public static function unique(string $name, int $columnLength): self
    {
        $fd = self::sized($name, $columnLength);
        $fd->unique = true;

        return $fd;
    }

    public function getFieldType(): string
    {
        return 'input';
    }

    public function getColumnLength(): int
    {
        return $this->columnLength;
    }

    public function setColumnLength(?int $columnLength): static
    {
        if ($columnLength) {
            $this->columnLength = $columnLength;
        }

        return $this;
    }

    public function getRegex(): string
    {
        return $this->regex;
    }

    public function setRegex(string $regex): void
    {
        $this->regex = $regex;
    }

    public function getColumnType(): string
    {
        return "varchar({$this->columnLength})";
    }

    public function checkValidity(mixed $data, bool $omitMandatoryCheck = false, array $params = []): void
    {
        if (\is_string($data)) {
            if (!$omitMandatoryCheck && $this->regex !== '' && $data !== '' && !preg_match('#' . $this->regex . '#', $data)) {
                throw new ValidationException('Value in field [ ' . $this->getName() . " ] doesn't match input validation '" . $this->regex . "'");
            }
            if ($this->columnLength && mb_strlen($data) > $this->columnLength) {
                throw new ValidationException('Value in field [ ' . $this->getName() . ' ] is longer than ' . $this->columnLength . ' characters');
            }
        }
        parent::checkValidity($data, $omitMandatoryCheck);
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
