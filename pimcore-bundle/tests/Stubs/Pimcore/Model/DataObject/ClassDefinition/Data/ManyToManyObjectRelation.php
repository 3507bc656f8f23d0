<?php

declare(strict_types=1);

namespace Pimcore\Model\DataObject\ClassDefinition\Data;

use Pimcore\Model\DataObject;
use Pimcore\Model\DataObject\ClassDefinition\Data;
use Pimcore\Model\DataObject\Concrete;

/** Stand-in for ClassDefinition\Data\ManyToManyObjectRelation (tests only): setter `?array` of objects, stored as `,id,id,`. */
class ManyToManyObjectRelation extends Data implements TypeDeclarationSupportInterface
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
        return 'manyToManyObjectRelation';
    }

    public function getColumnType(): string
    {
        return 'text';
    }

    public function getDataForResource(mixed $data, ?Concrete $object = null, array $params = []): array
    {
        $ids = array_map(static fn (DataObject\AbstractObject $o): ?int => $o->getId(), \is_array($data) ? $data : []);

        return [$this->name => $ids === [] ? null : ',' . implode(',', $ids) . ','];
    }

    public function getDataFromResource(array $row, ?Concrete $object = null, array $params = []): mixed
    {
        $raw = (string) ($row[$this->name] ?? '');
        $objects = [];
        foreach (array_filter(explode(',', $raw), static fn (string $v): bool => $v !== '') as $id) {
            $o = DataObject::getById((int) $id);
            if ($o !== null) {
                $objects[] = $o;
            }
        }

        return $objects;
    }

    public function getParameterTypeDeclaration(): ?string
    {
        return '?array';
    }

    public function getReturnTypeDeclaration(): ?string
    {
        return 'array';
    }

    public function getPhpdocInputType(): ?string
    {
        return '\\' . DataObject\Concrete::class . '[]';
    }

    public function getPhpdocReturnType(): ?string
    {
        return '\\' . DataObject\Concrete::class . '[]';
    }
}
