<?php

declare(strict_types=1);

namespace Pimcore\Model\DataObject;

use Pimcore\Db;
use Pimcore\Model\DataObject;
use Pimcore\Model\Listing\AbstractListing;

/**
 * Stand-in for Pimcore\Model\DataObject\Listing (tests only). Like Pimcore's Dao
 * (models/DataObject/Listing/Dao.php:60-75) it loads the matching ids with one query, then each object
 * through DataObject::getById(): an instance already in the RuntimeCache is returned as it is in memory,
 * not as the row is. The object types default to all three; unpublished objects are filtered out only
 * when hideUnpublished is on (lib/Model/Listing/Dao/QueryBuilderHelperTrait.php:55-75).
 */
class Listing extends AbstractListing
{
    protected bool $unpublished = false;
    /** @var list<string> */
    protected array $objectTypes = [self::OBJECT_TYPE_OBJECT, self::OBJECT_TYPE_VARIANT, self::OBJECT_TYPE_FOLDER];

    private const OBJECT_TYPE_OBJECT = 'object';
    private const OBJECT_TYPE_VARIANT = 'variant';
    private const OBJECT_TYPE_FOLDER = 'folder';

    public function getUnpublished(): bool
    {
        return $this->unpublished;
    }

    public function setUnpublished(bool $unpublished): static
    {
        $this->unpublished = $unpublished;
        $this->data = null;

        return $this;
    }

    /** @param list<string> $objectTypes */
    public function setObjectTypes(array $objectTypes): static
    {
        $this->objectTypes = $objectTypes;
        $this->data = null;

        return $this;
    }

    /** @return list<string> */
    public function getObjectTypes(): array
    {
        return $this->objectTypes;
    }

    /** @return list<AbstractObject> */
    public function getObjects(): array
    {
        /** @var list<AbstractObject> */
        return $this->getData();
    }

    /** @param list<AbstractObject> $objects */
    public function setObjects(array $objects): static
    {
        return $this->setData($objects);
    }

    protected function getTableName(): string
    {
        return 'objects';
    }

    private function where(): string
    {
        $table = $this->getTableName();
        $condition = $this->condition;
        if ($this->objectTypes !== []) {
            $types = implode("','", array_map(static fn (string $t): string => str_replace("'", '', $t), $this->objectTypes));
            $condition = ($condition === '' ? '' : "({$condition}) AND ") . "`{$table}`.`type` IN ('{$types}')";
        }
        if (AbstractObject::doHideUnpublished() && !$this->unpublished) {
            $condition = ($condition === '' ? '' : "({$condition}) AND ") . "`{$table}`.published = 1";
        }

        return $condition === '' ? '' : " WHERE {$condition}";
    }

    /** @return list<int> */
    public function loadIdList(): array
    {
        $table = $this->getTableName();
        $ids = Db::get()->fetchFirstColumn("SELECT `{$table}`.id FROM `{$table}`" . $this->where() . $this->orderAndLimit(), $this->conditionVariables);

        return array_map('intval', $ids);
    }

    /** @return list<AbstractObject> */
    public function load(): array
    {
        $objects = [];
        foreach ($this->loadIdList() as $id) {
            $object = DataObject::getById($id);
            if ($object !== null) {
                $objects[] = $object;
            }
        }
        $this->data = $objects;

        return $objects;
    }

    public function getTotalCount(): int
    {
        $table = $this->getTableName();

        return (int) Db::get()->fetchOne("SELECT COUNT(*) FROM `{$table}`" . $this->where(), $this->conditionVariables);
    }
}
