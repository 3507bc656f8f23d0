<?php

declare(strict_types=1);

namespace Pimcore\Model;

use Pimcore\Db;

/**
 * Stand-in for Pimcore\Model\Version (models/Version.php at v11.4.1; tests only). Version::disable() is
 * process-wide (`$disabled`, Version.php:75-124). save() (126-187), called by Concrete::update() inside
 * save()'s transaction: nothing when disabled; else a `versions` row on Db::get() and the serialized
 * object written to var/versions/object/g<group>/<cid>/<id> (FileSystemVersionStorageAdapter.php:70-77,
 * group = floor(cid / 10000) * 10000) BEFORE the commit: when the transaction rolls back, the row goes
 * and the file stays, an orphan.
 */
class Version extends AbstractModel
{
    public static bool $disabled = false;

    protected ?int $id = null;
    protected int $cid = 0;
    protected string $ctype = 'object';
    protected int $date = 0;
    protected string $note = '';
    protected int $versionCount = 0;
    protected mixed $data = null;

    public static function disable(): void
    {
        self::$disabled = true;
    }

    public static function enable(): void
    {
        self::$disabled = false;
    }

    public static function isEnabled(): bool
    {
        return !self::$disabled;
    }

    /** @internal var/versions of the stand-in's project directory */
    public static function directory(): string
    {
        $container = \Pimcore::getContainer() ?? throw new \LogicException('the Pimcore stand-in is not booted');

        return $container->getParameter('kernel.project_dir') . '/var/versions';
    }

    public function save(): void
    {
        if (self::$disabled) {
            return;
        }
        if ($this->date === 0) {
            $this->date = time();
        }
        $data = $this->data instanceof DataObject\Concrete ? $this->data->versionData() : $this->data;
        $serialized = json_encode($data, \JSON_THROW_ON_ERROR | \JSON_UNESCAPED_UNICODE);
        $db = Db::get();
        $db->executeStatement(
            'INSERT INTO versions (cid, ctype, `date`, note, versionCount, serialized) VALUES (?, ?, ?, ?, ?, 1)',
            [$this->cid, $this->ctype, $this->date, $this->note, $this->versionCount],
        );
        $this->id = (int) $db->lastInsertId();
        $file = self::directory() . '/' . $this->getStorageFilename();
        if (!is_dir(\dirname($file))) {
            mkdir(\dirname($file), 0o777, true);
        }
        file_put_contents($file, $serialized);
    }

    public function getStorageFilename(): string
    {
        $group = floor($this->cid / 10000) * 10000;

        return "{$this->ctype}/g{$group}/{$this->cid}/{$this->id}";
    }

    public function getId(): ?int
    {
        return $this->id;
    }

    public function setCid(int $cid): static
    {
        $this->cid = $cid;

        return $this;
    }

    public function getCid(): int
    {
        return $this->cid;
    }

    public function setCtype(string $ctype): static
    {
        $this->ctype = $ctype;

        return $this;
    }

    public function setDate(int $date): static
    {
        $this->date = $date;

        return $this;
    }

    public function setNote(string $note): static
    {
        $this->note = $note;

        return $this;
    }

    public function setVersionCount(int $versionCount): static
    {
        $this->versionCount = $versionCount;

        return $this;
    }

    public function getVersionCount(): int
    {
        return $this->versionCount;
    }

    public function setData(mixed $data): static
    {
        $this->data = $data;

        return $this;
    }

    public function getData(): mixed
    {
        return $this->data;
    }
}
