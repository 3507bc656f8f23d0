<?php

declare(strict_types=1);

namespace Pimcore\Model\DataObject;

use Doctrine\DBAL\Exception\RetryableException;
use Doctrine\DBAL\Exception\UniqueConstraintViolationException;
use Pimcore\Cache;
use Pimcore\Cache\RuntimeCache;
use Pimcore\Db;
use Pimcore\Event\DataObjectEvents;
use Pimcore\Event\Model\DataObjectEvent;
use Pimcore\Logger;
use Pimcore\Model\DataObject;
use Pimcore\Model\Element\AbstractElement;
use Pimcore\Model\Element\DuplicateFullPathException;
use Pimcore\Model\Element\ElementInterface;
use Pimcore\Model\Element\Service as ElementService;
use Pimcore\Model\Element\ValidationException;

/**
 * Stand-in for Pimcore\Model\DataObject\AbstractObject (models/DataObject/AbstractObject.php at v11.4.1;
 * tests only), rows in the real `objects` table on Pimcore\Db::get(). Written from reading Pimcore's
 * source, not copied. What it models, with the lines it follows:
 *
 * - save() (482-622): PRE_ADD/PRE_UPDATE, correctPath() (the key must already be valid, the parent must
 *   exist, "Duplicate full path" refused before any transaction: 629-675), then up to 5 attempts, each
 *   its own beginTransaction()/commit() on Db::get() (505-575). Any \Exception inside rolls back (a failed
 *   rollback is only logged); a UniqueConstraintViolationException becomes
 *   ValidationException('unique constraint violation'); a RetryableException (deadlock, lock wait timeout)
 *   is retried after 100-500 ms, logged as "Unable to finish transaction", and thrown after the 5th. Then
 *   the cache tags are cleared (after the commit) and POST_ADD/POST_UPDATE fire; on failure
 *   POST_ADD_FAILURE/POST_UPDATE_FAILURE. A \Error (a TypeError) is not an \Exception: it leaves the
 *   transaction open, as in Pimcore.
 *   Nested in a transaction the caller opened on the same connection, DBAL decides what rollBack() means:
 *   DBAL 3 without savepoints (Pimcore never enables them) only marks the outer transaction rollback-only;
 *   a deadlock rolls the whole outer transaction back in InnoDB, and the retry then runs in autocommit.
 * - update() (684-706): modification date and version count, then the instance is registered in the
 *   RuntimeCache.
 * - delete() (435-483) with doDelete() (416-427): the whole subtree goes, children, variants and folders,
 *   unpublished ones included, each through its own delete(), in one transaction; the instance is then
 *   unregistered.
 * - getById() (180-250): the RuntimeCache's instance if there is one, else built through the model factory
 *   (class overrides) from the tables, registered, POST_LOAD.
 */
abstract class AbstractObject extends AbstractElement
{
    public const OBJECT_TYPE_FOLDER = 'folder';
    public const OBJECT_TYPE_OBJECT = 'object';
    public const OBJECT_TYPE_VARIANT = 'variant';

    /** @var list<string> */
    public static array $types = [self::OBJECT_TYPE_FOLDER, self::OBJECT_TYPE_OBJECT, self::OBJECT_TYPE_VARIANT];

    private static bool $hideUnpublished = false;
    private static bool $getInheritedValues = false;

    protected ?int $id = null;
    protected ?int $parentId = null;
    protected ?self $parent = null;
    protected string $type = self::OBJECT_TYPE_OBJECT;
    protected ?string $key = null;
    protected ?string $path = null;
    protected int $index = 0;
    protected ?int $creationDate = null;
    protected ?int $modificationDate = null;
    protected int $versionCount = 0;

    public static function setHideUnpublished(bool $hideUnpublished): void
    {
        self::$hideUnpublished = $hideUnpublished;
    }

    public static function getHideUnpublished(): bool
    {
        return self::$hideUnpublished;
    }

    public static function doHideUnpublished(): bool
    {
        return self::$hideUnpublished;
    }

    public static function setGetInheritedValues(bool $getInheritedValues): void
    {
        self::$getInheritedValues = $getInheritedValues;
    }

    public static function getGetInheritedValues(): bool
    {
        return self::$getInheritedValues;
    }

    public static function doGetInheritedValues(?Concrete $object = null): bool
    {
        return self::$getInheritedValues;
    }

    /** @return list<string> */
    public static function getTypes(): array
    {
        return self::$types;
    }

    /** @internal */
    public static function getCacheKey(int|string|null $id): string
    {
        return 'object_' . $id;
    }

    protected static function typeMatch(self $object): bool
    {
        return \in_array(static::class, [self::class, DataObject::class, Concrete::class], true) || $object instanceof static;
    }

    public static function getById(int|string $id, array $params = []): ?static
    {
        $id = \is_string($id) ? (is_numeric($id) ? (int) $id : 0) : $id;
        if ($id < 1) {
            return null;
        }
        $cacheKey = self::getCacheKey($id);
        $force = (bool) ($params['force'] ?? false);
        if (!$force && RuntimeCache::isRegistered($cacheKey)) {
            $object = RuntimeCache::get($cacheKey);
            if ($object instanceof self && static::typeMatch($object)) {
                return $object;
            }
        }
        $row = Db::get()->fetchAssociative('SELECT * FROM objects WHERE id = ?', [$id]);
        if ($row === false || !\in_array($row['type'], self::$types, true)) {
            Logger::error("No entry for object id {$id}");

            return null;
        }
        $className = $row['type'] === self::OBJECT_TYPE_FOLDER ? Folder::class : 'Pimcore\\Model\\DataObject\\' . ucfirst((string) $row['className']);
        /** @var self $object */
        $object = self::getModelFactory()->build($className);
        RuntimeCache::set($cacheKey, $object);
        $object->loadFromRow($row);
        if (!static::typeMatch($object)) {
            return null;
        }
        \Pimcore::getEventDispatcher()->dispatch(new DataObjectEvent($object, ['params' => $params]), DataObjectEvents::POST_LOAD);

        return $object;
    }

    public static function getByPath(string $path, array $params = []): ?static
    {
        if ($path === '') {
            return null;
        }
        $path = ElementService::correctPath($path);
        $id = $path === '/'
            ? 1
            : Db::get()->fetchOne('SELECT id FROM objects WHERE CONCAT(`path`, `key`) = ?', [$path]);

        return $id === false ? null : static::getById((int) $id, $params);
    }

    /** @internal fills the instance from its `objects` row (Concrete adds its class's tables) */
    protected function loadFromRow(array $row): void
    {
        $this->id = (int) $row['id'];
        $this->parentId = $row['parentId'] === null ? null : (int) $row['parentId'];
        $this->type = (string) $row['type'];
        $this->key = (string) $row['key'];
        $this->path = (string) $row['path'];
        $this->index = (int) $row['index'];
        $this->creationDate = $row['creationDate'] === null ? null : (int) $row['creationDate'];
        $this->modificationDate = $row['modificationDate'] === null ? null : (int) $row['modificationDate'];
        $this->versionCount = (int) $row['versionCount'];
    }

    public function getId(): ?int
    {
        return $this->id;
    }

    public function setId(?int $id): static
    {
        $this->id = $id;

        return $this;
    }

    public function getKey(): ?string
    {
        return $this->key;
    }

    public function setKey(string $key): static
    {
        $this->key = $key;

        return $this;
    }

    public function getType(): string
    {
        return $this->type;
    }

    public function setType(string $type): static
    {
        $this->type = $type;

        return $this;
    }

    public function getParentId(): ?int
    {
        return $this->parentId;
    }

    public function setParentId(?int $parentId): static
    {
        $this->parentId = $parentId;
        $this->parent = null;

        return $this;
    }

    public function getParent(): ?self
    {
        return $this->parent ??= ($this->parentId === null ? null : DataObject::getById($this->parentId));
    }

    public function setParent(?ElementInterface $parent): static
    {
        if ($parent !== null && !$parent instanceof self) {
            throw new \InvalidArgumentException('the parent of a data object is a data object');
        }
        $this->parent = $parent;
        $this->parentId = $parent?->getId();

        return $this;
    }

    public function getPath(): ?string
    {
        return $this->path;
    }

    public function setPath(string $path): static
    {
        $this->path = $path;

        return $this;
    }

    public function getFullPath(): string
    {
        return $this->path . $this->key;
    }

    public function getRealFullPath(): string
    {
        return $this->getFullPath();
    }

    public function getRealPath(): ?string
    {
        return $this->path;
    }

    public function getIndex(): int
    {
        return $this->index;
    }

    public function getCreationDate(): ?int
    {
        return $this->creationDate;
    }

    public function getModificationDate(): ?int
    {
        return $this->modificationDate;
    }

    public function getVersionCount(): int
    {
        return $this->versionCount;
    }

    /** The path as the database has it now (not as this instance has it): the parent's, for correctPath(). */
    public function getCurrentFullPath(): ?string
    {
        $path = Db::get()->fetchOne('SELECT CONCAT(`path`, `key`) FROM objects WHERE id = ?', [$this->id]);

        return $path === false ? null : (string) $path;
    }

    /** @param list<string> $objectTypes */
    public function getChildren(array $objectTypes = [self::OBJECT_TYPE_OBJECT, self::OBJECT_TYPE_VARIANT, self::OBJECT_TYPE_FOLDER], bool $includingUnpublished = false): Listing
    {
        $list = new Listing();
        if ($this->id === null) {
            $list->setObjects([]);

            return $list;
        }
        $list->setUnpublished($includingUnpublished);
        $list->setCondition('parentId = ?', $this->id);
        $list->setObjectTypes($objectTypes);

        return $list;
    }

    /** @param list<string> $objectTypes */
    public function hasChildren(array $objectTypes = [self::OBJECT_TYPE_OBJECT, self::OBJECT_TYPE_VARIANT, self::OBJECT_TYPE_FOLDER], ?bool $includingUnpublished = null): bool
    {
        return $this->getChildren($objectTypes, $includingUnpublished ?? true)->getTotalCount() > 0;
    }

    public function get(string $fieldName, ?string $language = null): mixed
    {
        if ($fieldName === '') {
            throw new \Exception('Field name must not be empty.');
        }

        return $this->{'get' . ucfirst($fieldName)}($language);
    }

    /** Strict types (this file declares them): the generated setter's type declaration is enforced. */
    public function set(string $fieldName, mixed $value, ?string $language = null): mixed
    {
        if ($fieldName === '') {
            throw new \Exception('Field name must not be empty.');
        }

        return $this->{'set' . ucfirst($fieldName)}($value, $language);
    }

    protected function dispatchEvent(DataObjectEvent $event, string $name): void
    {
        \Pimcore::getEventDispatcher()->dispatch($event, $name);
    }

    public function save(array $parameters = []): static
    {
        $isUpdate = false;
        try {
            $preEvent = new DataObjectEvent($this, $parameters);
            if ($this->getId()) {
                $isUpdate = true;
                $this->dispatchEvent($preEvent, DataObjectEvents::PRE_UPDATE);
            } else {
                $this->dispatchEvent($preEvent, DataObjectEvents::PRE_ADD);
            }
            $parameters = $preEvent->getArguments();
            $this->correctPath();

            $maxRetries = 5;
            for ($retries = 0; $retries < $maxRetries; ++$retries) {
                $hideUnpublishedBackup = self::getHideUnpublished();
                self::setHideUnpublished(false);
                Db::get()->beginTransaction();
                try {
                    if (!\in_array($this->getType(), self::$types, true)) {
                        throw new \Exception('invalid object type given: [' . $this->getType() . ']');
                    }
                    if (!$isUpdate) {
                        $this->daoCreate();
                    }
                    $this->update($isUpdate, $parameters);
                    self::setHideUnpublished($hideUnpublishedBackup);
                    Db::get()->commit();

                    break;
                } catch (\Exception $e) {
                    try {
                        Db::get()->rollBack();
                    } catch (\Exception $er) {
                        Logger::info((string) $er);
                    }
                    self::setHideUnpublished($hideUnpublishedBackup);
                    if ($e instanceof UniqueConstraintViolationException) {
                        throw new ValidationException('unique constraint violation', 0, $e);
                    }
                    if (!$e instanceof RetryableException) {
                        throw $e;
                    }
                    if ($retries >= $maxRetries - 1) {
                        Logger::error('Finally giving up restarting the same transaction again and again, last message: ' . $e->getMessage());

                        throw $e;
                    }
                    $run = $retries + 1;
                    $wait = random_int(1, 5) * 100000;
                    Logger::warn("Unable to finish transaction ({$run}. run) because of the following reason '{$e->getMessage()}'. --> Retrying in {$wait} microseconds ... (" . ($run + 1) . " of {$maxRetries})");
                    usleep($wait);
                }
            }
            $this->clearDependentCache();
            $postEvent = new DataObjectEvent($this, $parameters);
            $this->dispatchEvent($postEvent, $isUpdate ? DataObjectEvents::POST_UPDATE : DataObjectEvents::POST_ADD);

            return $this;
        } catch (\Exception $e) {
            $failureEvent = new DataObjectEvent($this, $parameters);
            $failureEvent->setArgument('exception', $e);
            $this->dispatchEvent($failureEvent, $isUpdate ? DataObjectEvents::POST_UPDATE_FAILURE : DataObjectEvents::POST_ADD_FAILURE);

            throw $e;
        }
    }

    /** @internal AbstractObject.php:629-675 */
    protected function correctPath(): void
    {
        if ($this->getId() !== 1) {
            if (!ElementService::isValidKey((string) $this->getKey(), 'object')) {
                throw new \Exception('invalid key for object with id [ ' . $this->getId() . ' ] key is: [' . $this->getKey() . ']');
            }
            if (!$this->getParentId()) {
                throw new \Exception('ParentID is mandatory and can´t be null. If you want to add the element as a child to the tree´s root node, consider setting ParentID to 1.');
            }
            if ($this->getParentId() === $this->getId()) {
                throw new \Exception("ParentID and ID are identical, an element can't be the parent of itself in the tree.");
            }
            $parent = DataObject::getById($this->getParentId());
            if ($parent === null) {
                throw new \Exception('ParentID not found.');
            }
            $this->setPath(str_replace('//', '/', $parent->getCurrentFullPath() . '/'));
            if (\strlen((string) $this->getKey()) < 1) {
                throw new \Exception('DataObject requires key');
            }
        }
        if (Service::pathExists($this->getRealFullPath())) {
            $duplicate = DataObject::getByPath($this->getRealFullPath());
            if ($duplicate instanceof self && $duplicate->getId() !== $this->getId()) {
                $e = new DuplicateFullPathException('Duplicate full path [ ' . $this->getRealFullPath() . ' ] - cannot save object');
                $e->setDuplicateElement($duplicate);
                $e->setCauseElement($this);

                throw $e;
            }
        }
        if (mb_strlen($this->getRealFullPath()) > 765) {
            throw new \Exception("Full path is limited to 765 characters, reduce the length of your parent's path");
        }
    }

    /** @internal AbstractObject.php:684-706 */
    protected function update(?bool $isUpdate = null, array $params = []): void
    {
        $this->modificationDate = time();
        $this->creationDate ??= $this->modificationDate;
        ++$this->versionCount;
        RuntimeCache::set(self::getCacheKey($this->getId()), $this);
    }

    /** @internal the Dao's create(): the `objects` row, so that the object has its id */
    protected function daoCreate(): void
    {
        $db = Db::get();
        $db->executeStatement(
            'INSERT INTO objects (`key`, `path`, parentId, `type`, creationDate, modificationDate, classId, className) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
            [$this->key, $this->path, $this->parentId, $this->type, $this->creationDate ?? time(), $this->modificationDate ?? time(), $this->daoClassId(), $this->daoClassName()],
        );
        $this->id = (int) $db->lastInsertId();
    }

    /** @internal the Dao's update(): the `objects` row (Concrete adds its class's tables after it) */
    protected function daoUpdate(): void
    {
        Db::get()->executeStatement(
            'UPDATE objects SET `key` = ?, `path` = ?, parentId = ?, `type` = ?, published = ?, creationDate = ?, modificationDate = ?, versionCount = ? WHERE id = ?',
            [$this->key, $this->path, $this->parentId, $this->type, $this->daoPublished(), $this->creationDate, $this->modificationDate, $this->versionCount, $this->id],
        );
    }

    protected function daoClassId(): ?string
    {
        return null;
    }

    protected function daoClassName(): ?string
    {
        return null;
    }

    protected function daoPublished(): int
    {
        return 1;
    }

    public function clearDependentCache(array $additionalTags = []): void
    {
        try {
            Cache::clearTags(array_merge(['object_' . $this->getId(), 'object_properties', 'output'], $additionalTags));
        } catch (\Exception $e) {
            Logger::crit((string) $e);
        }
    }

    /** @internal AbstractObject.php:416-427: the children first (all types, unpublished too), each through delete() */
    protected function doDelete(): void
    {
        foreach ($this->getChildren(self::$types, true) as $child) {
            $child->delete();
        }
    }

    public function delete(): void
    {
        $this->dispatchEvent(new DataObjectEvent($this), DataObjectEvents::PRE_DELETE);
        Db::get()->beginTransaction();
        try {
            $this->doDelete();
            Db::get()->executeStatement('DELETE FROM objects WHERE id = ?', [$this->getId()]);
            Db::get()->commit();
        } catch (\Exception $e) {
            try {
                Db::get()->rollBack();
            } catch (\Exception $er) {
                Logger::info((string) $er);
            }
            $failureEvent = new DataObjectEvent($this);
            $failureEvent->setArgument('exception', $e);
            $this->dispatchEvent($failureEvent, DataObjectEvents::POST_DELETE_FAILURE);
            Logger::crit((string) $e);

            throw $e;
        }
        $this->clearDependentCache();
        RuntimeCache::set(self::getCacheKey($this->getId()), null);
        $this->dispatchEvent(new DataObjectEvent($this), DataObjectEvents::POST_DELETE);
    }
}
