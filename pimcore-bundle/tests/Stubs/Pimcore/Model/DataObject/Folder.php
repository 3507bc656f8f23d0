<?php

declare(strict_types=1);

namespace Pimcore\Model\DataObject;

use Pimcore\Model\DataObject;

/** Stand-in for Pimcore\Model\DataObject\Folder (tests only): a row of type folder in `objects`. */
class Folder extends DataObject
{
    protected string $type = self::OBJECT_TYPE_FOLDER;

    protected function update(?bool $isUpdate = null, array $params = []): void
    {
        parent::update($isUpdate, $params);
        $this->daoUpdate();
    }

    public static function create(array $values): static
    {
        $folder = new static();
        foreach ($values as $name => $value) {
            $folder->{'set' . ucfirst($name)}($value);
        }
        $folder->save();

        return $folder;
    }
}
