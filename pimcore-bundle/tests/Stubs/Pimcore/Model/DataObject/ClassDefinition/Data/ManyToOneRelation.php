<?php

declare(strict_types=1);

namespace Pimcore\Model\DataObject\ClassDefinition\Data;

use Pimcore\Model\DataObject;
use Pimcore\Model\DataObject\ClassDefinition\Data;
use Pimcore\Model\DataObject\Concrete;

/**
 * Stand-in for ClassDefinition\Data\ManyToOneRelation (tests only): setter
 * `?\Pimcore\Model\Element\AbstractElement` (ManyToOneRelation.php:499), stored as the related id in
 * `<name>__id` (Pimcore's query-table column; its relations table is not modelled).
 */
class ManyToOneRelation extends Data implements TypeDeclarationSupportInterface
{
    /** @var list<array{classes: string}> */
    public array $classes = [];

    public static function to(string $name, string $class, bool $mandatory = false): self
    {
        $fd = self::named($name, $mandatory);
        $fd->classes = [['classes' => $class]];

        return $fd;
    }

    public function getFieldType(): string
    {
        return 'manyToOneRelation';
    }

    public function getColumnType(): string
    {
        return 'int(11) unsigned';
    }

    public function getColumns(): array
    {
        return ["{$this->name}__id" => 'int(11) unsigned'];
    }

    public function getDataForResource(mixed $data, ?Concrete $object = null, array $params = []): array
    {
        return ["{$this->name}__id" => $data instanceof DataObject\AbstractObject ? $data->getId() : null];
    }

    public function getDataFromResource(array $row, ?Concrete $object = null, array $params = []): mixed
    {
        $id = $row["{$this->name}__id"] ?? null;

        return $id === null ? null : DataObject::getById((int) $id);
    }

    public function getParameterTypeDeclaration(): ?string
    {
        return '?\\' . \Pimcore\Model\Element\AbstractElement::class;
    }

    public function getReturnTypeDeclaration(): ?string
    {
        return '?\\' . \Pimcore\Model\Element\AbstractElement::class;
    }

    public function getPhpdocInputType(): ?string
    {
        return '\\' . \Pimcore\Model\Element\AbstractElement::class . '|null';
    }

    public function getPhpdocReturnType(): ?string
    {
        return '\\' . \Pimcore\Model\Element\AbstractElement::class . '|null';
    }
}
