<?php

declare(strict_types=1);

namespace Pimcore\Model\DataObject;

use Pimcore\Db;
use Pimcore\Event\DataObjectEvents;
use Pimcore\Event\Model\DataObjectEvent;
use Pimcore\Model\DataObject\ClassDefinition\Data\Localizedfields;
use Pimcore\Model\Element\ValidationException;
use Pimcore\Model\Version;

/**
 * Stand-in for Pimcore\Model\DataObject\Concrete (models/DataObject/Concrete.php at v11.4.1; tests only):
 * the base of the generated classes (tests/Stubs/Pimcore/Model/DataObject/Product.php and Category.php),
 * their values in `object_store_<classId>` and `object_localized_data_<classId>`, in the collation the
 * stand-in was booted with.
 *
 * update() (Concrete.php:120-222), inside save()'s transaction, after the `objects` row of a new object
 * was inserted: every field definition's checkValidity() with getOmitMandatoryCheck(), which is
 * "not published" unless set (Concrete.php:466-473); the refusals are collected, offered to
 * PRE_UPDATE_VALIDATION_EXCEPTION, and thrown as one ValidationException("Validation failed: a / b").
 * Then the `objects` row, the class's rows, and the version (Version::save(): a `versions` row and a
 * file under var/versions, before the commit).
 */
abstract class Concrete extends \Pimcore\Model\DataObject
{
    protected bool $published = false;
    protected ?bool $omitMandatoryCheck = null;
    protected ?Localizedfield $localizedfields = null;

    public static function classId(): string
    {
        $vars = get_class_vars(static::class);

        return (string) $vars['classId'];
    }

    public function getClassId(): string
    {
        return static::classId();
    }

    public function getClassName(): string
    {
        return $this->getClass()->getName();
    }

    public function getClass(): ClassDefinition
    {
        return ClassDefinition::getById($this->getClassId()) ?? throw new \Exception('class definition ' . $this->getClassId() . ' not found');
    }

    public function getPublished(): bool
    {
        return $this->published;
    }

    public function isPublished(): bool
    {
        return $this->published;
    }

    public function setPublished(bool $published): static
    {
        $this->published = $published;

        return $this;
    }

    public function setOmitMandatoryCheck(bool $omitMandatoryCheck): static
    {
        $this->omitMandatoryCheck = $omitMandatoryCheck;

        return $this;
    }

    public function getOmitMandatoryCheck(): bool
    {
        return $this->omitMandatoryCheck ?? !$this->isPublished();
    }

    public function getLocalizedfields(): Localizedfield
    {
        return $this->localizedfields ??= new Localizedfield();
    }

    /** Pimcore's static getters, Product::getBySku($value, $limit, ...) (Concrete::__callStatic(), Concrete.php:540-650) */
    public static function __callStatic(string $method, array $arguments): mixed
    {
        if (!str_starts_with($method, 'getBy')) {
            throw new \Exception('Call to undefined static method ' . $method . ' in class DataObject\\Concrete');
        }
        $property = lcfirst(substr($method, 5));
        $class = ClassDefinition::getById(static::classId()) ?? throw new \Exception('no class definition');
        $field = null;
        foreach ($class->getFieldDefinitions() as $fd) {
            if (strcasecmp($fd->getName(), $property) === 0) {
                $field = $fd;
            }
        }
        if ($field === null || $field instanceof Localizedfields) {
            throw new \Exception('Call to undefined static method ' . $method . ' in class DataObject\\Concrete');
        }
        $value = \array_key_exists(0, $arguments) ? $arguments[0] : throw new \InvalidArgumentException('Mandatory argument $value not set.');
        $limit = $arguments[1] ?? null;
        $offset = $arguments[2] ?? 0;
        $listClass = static::class . '\\Listing';
        /** @var Listing\Concrete $list */
        $list = new $listClass();
        $list->setCondition('`' . $field->getName() . '` = ' . Db::get()->quote((string) $value) . ' ');
        if (\is_array($limit)) {
            if (isset($limit['limit'])) {
                $list->setLimit((int) $limit['limit']);
            }
            if (isset($limit['unpublished'])) {
                $list->setUnpublished((bool) $limit['unpublished']);
            }
            $limit = $limit['limit'] ?? null;
        } else {
            $list->setLimit($limit);
            $list->setOffset((int) $offset);
        }
        if ($limit !== null && (int) $limit === 1) {
            return $list->getObjects()[0] ?? null;
        }

        return $list;
    }

    protected function daoClassId(): ?string
    {
        return $this->getClassId();
    }

    protected function daoClassName(): ?string
    {
        return $this->getClass()->getName();
    }

    protected function daoPublished(): int
    {
        return (int) $this->published;
    }

    protected function loadFromRow(array $row): void
    {
        parent::loadFromRow($row);
        $this->published = (bool) $row['published'];
        $db = Db::get();
        $id = $this->getClassId();
        $store = $db->fetchAssociative("SELECT * FROM `object_store_{$id}` WHERE oo_id = ?", [$this->id]) ?: [];
        foreach ($this->getClass()->getFieldDefinitions() as $name => $fd) {
            if ($fd instanceof Localizedfields) {
                $items = [];
                foreach ($db->fetchAllAssociative("SELECT * FROM `object_localized_data_{$id}` WHERE ooo_id = ?", [$this->id]) as $lrow) {
                    foreach ($fd->getFieldDefinitions() as $child) {
                        $items[$lrow['language']][$child->getName()] = $child->getDataFromResource($lrow, $this);
                    }
                }
                $this->getLocalizedfields()->setItems($items);
            } else {
                $this->{$name} = $fd->getDataFromResource($store, $this);
            }
        }
    }

    protected function update(?bool $isUpdate = null, array $params = []): void
    {
        $exceptions = [];
        foreach ($this->getClass()->getFieldDefinitions() as $fd) {
            try {
                $getter = 'get' . ucfirst($fd->getName());
                if (method_exists($this, $getter)) {
                    $fd->checkValidity($this->{$getter}(), $this->getOmitMandatoryCheck(), $params);
                }
            } catch (ValidationException $ve) {
                $exceptions[] = $ve;
            }
        }
        $event = new DataObjectEvent($this, ['validationExceptions' => $exceptions, 'message' => 'Validation failed: ', 'separator' => ' / ']);
        \Pimcore::getEventDispatcher()->dispatch($event, DataObjectEvents::PRE_UPDATE_VALIDATION_EXCEPTION);
        $exceptions = $event->getArgument('validationExceptions');
        if ($exceptions) {
            $errors = array_map(static fn (ValidationException $e): string => $e->getAggregatedMessage(), $exceptions);

            throw new ValidationException($event->getArgument('message') . implode($event->getArgument('separator'), $errors));
        }
        parent::update($isUpdate, $params);
        $this->daoUpdate((bool) $isUpdate);
        $this->saveVersion(false, false, $params['versionNote'] ?? null);
    }

    /** @internal the Dao: `objects`, then the class's store row, then its localized rows */
    protected function daoUpdate(bool $isUpdate = true): void
    {
        parent::daoUpdate();
        $db = Db::get();
        $id = $this->getClassId();
        $columns = ['oo_id' => $this->id];
        foreach ($this->getClass()->getFieldDefinitions() as $name => $fd) {
            if ($fd instanceof Localizedfields) {
                $db->executeStatement("DELETE FROM `object_localized_data_{$id}` WHERE ooo_id = ?", [$this->id]);
                foreach ($this->getLocalizedfields()->getItems() as $language => $values) {
                    $row = ['ooo_id' => $this->id, 'language' => $language];
                    foreach ($fd->getFieldDefinitions() as $child) {
                        $row += $child->getDataForResource($values[$child->getName()] ?? null, $this);
                    }
                    $db->insert("object_localized_data_{$id}", self::quoted($row));
                }
            } else {
                $columns += $fd->getDataForResource($this->{$name} ?? null, $this);
            }
        }
        $names = implode(', ', array_map(static fn (string $c): string => "`{$c}`", array_keys($columns)));
        $marks = implode(', ', array_fill(0, \count($columns), '?'));
        // As Concrete\Dao::update (Concrete/Dao.php:254-259): a new object's store row is a plain INSERT; an
        // update is Helper::upsert (lib/Db/Helper.php:36-51), an INSERT whose unique violation becomes an
        // UPDATE of this object's row. Never ON DUPLICATE KEY UPDATE: a clash on a unique field's index then
        // overwrote the other object's row instead of failing as Pimcore's does.
        $insert = "INSERT INTO `object_store_{$id}` ({$names}) VALUES ({$marks})";
        if (!$isUpdate) {
            $db->executeStatement($insert, array_values($columns));

            return;
        }
        try {
            $db->executeStatement($insert, array_values($columns));
        } catch (\Doctrine\DBAL\Exception\UniqueConstraintViolationException) {
            $sets = array_diff_key($columns, ['oo_id' => true]);
            $db->update("object_store_{$id}", self::quoted($sets), ['oo_id' => $this->id]);
        }
    }

    /** @param array<string, mixed> $row @return array<string, mixed> */
    private static function quoted(array $row): array
    {
        $out = [];
        foreach ($row as $k => $v) {
            $out["`{$k}`"] = $v;
        }

        return $out;
    }

    public function saveVersion(bool $setModificationDate = true, bool $saveOnlyVersion = true, ?string $versionNote = null, bool $isAutoSave = false): ?Version
    {
        if ($setModificationDate) {
            $this->modificationDate = time();
        }
        $version = new Version();
        $version->setCid((int) $this->getId());
        $version->setCtype('object');
        $version->setDate((int) $this->getModificationDate());
        $version->setData($this);
        $version->setNote((string) $versionNote);
        $version->setVersionCount($this->getVersionCount());
        $version->save();

        return $version;
    }

    /** @internal the values saved in a version file */
    public function versionData(): array
    {
        $data = ['id' => $this->id, 'key' => $this->key, 'path' => $this->path, 'published' => $this->published];
        foreach ($this->getClass()->getFieldDefinitions() as $name => $fd) {
            $data[$name] = $fd instanceof Localizedfields ? $this->getLocalizedfields()->getItems() : $fd->getDataForResource($this->{$name} ?? null, $this);
        }

        return $data;
    }
}
