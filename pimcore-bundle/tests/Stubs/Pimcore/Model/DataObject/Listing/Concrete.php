<?php

declare(strict_types=1);

namespace Pimcore\Model\DataObject\Listing;

use Pimcore\Model\DataObject;

/**
 * Stand-in for Pimcore\Model\DataObject\Listing\Concrete (tests only): the listing of one class, over the
 * view `object_<classId>` (the class's columns joined to `objects`), as Pimcore's
 * (models/DataObject/Listing/Concrete/Dao.php:112). A condition on a field compares with the column's
 * collation: utf8mb4_general_ci on Pimcore 11, so `sku = 'ab-100'` finds `AB-100`.
 */
abstract class Concrete extends DataObject\Listing
{
    protected string $classId = '';
    protected string $className = '';
    protected ?string $locale = null;

    public function getClassId(): string
    {
        return $this->classId;
    }

    public function setClassId(string $classId): static
    {
        $this->classId = $classId;

        return $this;
    }

    public function getClassName(): string
    {
        return $this->className;
    }

    public function setClassName(string $className): static
    {
        $this->className = $className;

        return $this;
    }

    public function setLocale(?string $locale): static
    {
        $this->locale = $locale;

        return $this;
    }

    public function getLocale(): ?string
    {
        return $this->locale;
    }

    protected function getTableName(): string
    {
        return 'object_' . $this->classId;
    }
}
