<?php

declare(strict_types=1);

namespace Pimcore\Model\DataObject\ClassDefinition;

use Pimcore\Model\DataObject\Concrete;
use Pimcore\Model\Element\ValidationException;

/**
 * Stand-in for Pimcore\Model\DataObject\ClassDefinition\Data (tests only): a field's name, type and
 * `mandatory`, and the base checkValidity() (models/DataObject/ClassDefinition/Data.php:112-130): a
 * mandatory field may not be empty ("0" is not empty), unless the check is omitted, which Concrete does
 * for unpublished objects.
 *
 * The `resource` methods are the stand-in's storage (one or more columns of the class's table); their
 * names follow Pimcore's getDataForResource/getDataFromResource.
 */
abstract class Data
{
    public string $name = '';
    public string $title = '';
    public bool $mandatory = false;
    public bool $unique = false;

    public static function named(string $name, bool $mandatory = false): static
    {
        $fd = new static();
        $fd->name = $name;
        $fd->title = $name;
        $fd->mandatory = $mandatory;

        return $fd;
    }

    abstract public function getFieldType(): string;

    public function getName(): string
    {
        return $this->name;
    }

    public function setName(string $name): static
    {
        $this->name = $name;

        return $this;
    }

    public function getTitle(): string
    {
        return $this->title;
    }

    public function getMandatory(): bool
    {
        return $this->mandatory;
    }

    public function setMandatory(bool $mandatory): static
    {
        $this->mandatory = $mandatory;

        return $this;
    }

    public function getUnique(): bool
    {
        return $this->unique;
    }

    public function isFilterable(): bool
    {
        return true;
    }

    public function isEmpty(mixed $data): bool
    {
        return empty($data);
    }

    public function checkValidity(mixed $data, bool $omitMandatoryCheck = false, array $params = []): void
    {
        $isEmpty = true;
        if ((\is_string($data) || is_numeric($data)) && \strlen((string) $data) > 0) {
            $isEmpty = false;
        }
        if (!empty($data)) {
            $isEmpty = false;
        }
        if (!$omitMandatoryCheck && $this->getMandatory() && $isEmpty) {
            throw new ValidationException('Empty mandatory field [ ' . $this->getName() . ' ]');
        }
    }

    /** @return array<string, string> column => SQL type */
    public function getColumns(): array
    {
        return [$this->name => $this->getColumnType()];
    }

    abstract public function getColumnType(): string;

    /** @return array<string, mixed> column => value */
    public function getDataForResource(mixed $data, ?Concrete $object = null, array $params = []): array
    {
        return [$this->name => $data];
    }

    /** @param array<string, mixed> $row */
    public function getDataFromResource(array $row, ?Concrete $object = null, array $params = []): mixed
    {
        return $row[$this->name] ?? null;
    }
}
