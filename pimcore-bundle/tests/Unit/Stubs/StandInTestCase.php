<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Tests\Unit\Stubs;

use Doctrine\DBAL\Connection;
use PHPUnit\Framework\TestCase;
use Pimcore\Event\DataObjectEvents;
use Pimcore\Model\DataObject;
use Pimcore\Model\DataObject\Folder;
use Pimingestd\PimcoreBundle\Tests\Stubs\StandIn;

/**
 * The Pimcore stand-ins on the MariaDB server named by PIMINGEST_TEST_MYSQL_URL
 * (tests/test_pimcore_bundle.py starts one and sets it, and fails if any test here was skipped), in a
 * project directory of their own (var/versions). Each test proves one behaviour of Pimcore that the
 * stand-ins model; the docblocks name the Pimcore source they follow.
 */
abstract class StandInTestCase extends TestCase
{
    protected Connection $db;
    protected string $project;
    /** @var list<Connection> */
    private array $others = [];
    /** @var array<string, int> */
    protected array $events = [];

    protected function setUp(): void
    {
        $this->boot(StandIn::pimcoreCollation());
    }

    protected function boot(string $collation): void
    {
        $this->db = StandIn::connect(self::url());
        $this->project = sys_get_temp_dir() . '/pimingest-stubs-' . bin2hex(random_bytes(6));
        mkdir($this->project);
        StandIn::boot($this->db, $this->project, $collation);
        $this->events = [];
        $consts = (new \ReflectionClass(DataObjectEvents::class))->getConstants();
        foreach ($consts as $name) {
            \Pimcore::getEventDispatcher()->addListener($name, function () use ($name): void {
                $this->events[$name] = ($this->events[$name] ?? 0) + 1;
            });
        }
    }

    protected static function url(): string
    {
        $url = getenv('PIMINGEST_TEST_MYSQL_URL');
        if (!\is_string($url) || $url === '') {
            self::markTestSkipped('PIMINGEST_TEST_MYSQL_URL is not set (tests/test_pimcore_bundle.py starts MariaDB and sets it)');
        }

        return $url;
    }

    /** Another connection to the same database: another worker, or an admin. */
    protected function other(): Connection
    {
        $db = StandIn::connect(self::url());
        $this->others[] = $db;

        return $db;
    }

    protected function tearDown(): void
    {
        foreach ($this->others as $db) {
            $db->close();
        }
        $this->others = [];
        if (!isset($this->db)) {
            return;  // skipped before it connected
        }
        while ($this->db->isTransactionActive()) {
            try {
                $this->db->rollBack();
            } catch (\Throwable) {
                break;
            }
        }
        $this->db->close();
        StandIn::shutdown();
        exec('rm -rf ' . escapeshellarg($this->project));
    }

    protected function folder(string $path = '/Products'): Folder
    {
        return DataObject\Service::createFolderByPath($path);
    }

    /** A saved, published product with the given key and sku. */
    protected function product(string $key, ?string $sku = null, ?Folder $folder = null, bool $published = true): DataObject\Product
    {
        $p = new DataObject\Product();
        $p->setKey($key);
        $p->setParent($folder ?? $this->folder());
        $p->setSku($sku ?? $key);
        $p->setPublished($published);
        $p->save();

        return $p;
    }

    /** @return list<string> the version files written so far, relative to var/versions */
    protected function versionFiles(): array
    {
        $dir = $this->project . '/var/versions';
        if (!is_dir($dir)) {
            return [];
        }
        $files = [];
        foreach (new \RecursiveIteratorIterator(new \RecursiveDirectoryIterator($dir, \FilesystemIterator::SKIP_DOTS)) as $file) {
            $files[] = substr((string) $file, \strlen($dir) + 1);
        }
        sort($files);

        return $files;
    }
}
