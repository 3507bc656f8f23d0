<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Tests\Unit\Stubs;

use Doctrine\DBAL\Exception\LockWaitTimeoutException;
use Pimcore\Event\DataObjectEvents;
use Pimcore\Model\DataObject\Product;
use Pimcore\Model\Element\ValidationException;
use Pimcore\Model\Version;

/**
 * What a save does besides its rows (issue 26, items 7 and 8): events per save, a version file written
 * under var/versions before the commit (Concrete.php:219, Version.php:126-187), and the cache tags
 * cleared on the shared connection (AbstractObject.php:708-731), whose row locks a caller's open
 * transaction holds.
 */
final class SideEffectsTest extends StandInTestCase
{
    public function testEachSaveFiresItsEventsOnceAndARefusedOneItsFailureEvent(): void
    {
        $this->folder();
        $this->events = [];
        $p = $this->product('P');
        self::assertSame(1, $this->events[DataObjectEvents::PRE_ADD]);
        self::assertSame(1, $this->events[DataObjectEvents::POST_ADD]);
        $this->events = [];
        $p->setEan('1');
        $p->save();
        $p->setEan('2');
        $p->save();
        self::assertSame([DataObjectEvents::PRE_UPDATE => 2, DataObjectEvents::PRE_UPDATE_VALIDATION_EXCEPTION => 2, DataObjectEvents::POST_UPDATE => 2], $this->events);
        $this->events = [];
        $p->setEan(str_repeat('1', 14));
        try {
            $p->save();
        } catch (ValidationException) {
        }
        self::assertSame([DataObjectEvents::PRE_UPDATE => 1, DataObjectEvents::PRE_UPDATE_VALIDATION_EXCEPTION => 1, DataObjectEvents::POST_UPDATE_FAILURE => 1], $this->events);
    }

    public function testAVersionFileIsWrittenBeforeTheCommitAndOrphanedByARollback(): void
    {
        $p = $this->product('P');
        $id = (int) $this->db->fetchOne('SELECT id FROM versions WHERE cid = ?', [$p->getId()]);
        self::assertSame(["object/g0/{$p->getId()}/{$id}"], array_values(array_filter($this->versionFiles(), static fn (string $f): bool => str_contains($f, "/{$p->getId()}/"))));
        $this->db->beginTransaction();
        $p->setEan('ROLLED-BACK');
        $p->save();
        $this->db->rollBack();
        $files = array_values(array_filter($this->versionFiles(), static fn (string $f): bool => str_contains($f, "/{$p->getId()}/")));
        self::assertCount(2, $files, 'the rolled-back save left its version file');
        self::assertStringContainsString('ROLLED-BACK', (string) file_get_contents("{$this->project}/var/versions/{$files[1]}"));
        self::assertSame(1, (int) $this->db->fetchOne('SELECT COUNT(*) FROM versions WHERE cid = ?', [$p->getId()]), 'but not its row');
    }

    public function testVersion_disableStopsVersionsForTheWholeProcess(): void
    {
        Version::disable();
        $p = $this->product('P');
        self::assertSame([], array_filter($this->versionFiles(), static fn (string $f): bool => str_contains($f, "/{$p->getId()}/")));
        self::assertFalse(Version::isEnabled());
        Version::enable();
        $p->save();
        self::assertCount(1, array_filter($this->versionFiles(), static fn (string $f): bool => str_contains($f, "/{$p->getId()}/")));
    }

    /**
     * Every save clears the tag object_properties: a row of `cache_items` on the shared connection. Inside
     * a transaction the caller keeps open, that row stays locked, and every other save waits for it.
     */
    public function testASaveInsideAnOpenTransactionHoldsTheCacheRowEveryOtherSaveNeeds(): void
    {
        $p = $this->product('P');
        $tag = "pimcore\0tags\0object_properties";
        self::assertNotFalse($this->db->fetchOne('SELECT item_id FROM cache_items WHERE item_id = ?', [$tag]));
        $this->db->beginTransaction();
        $p->setEan('HELD');
        $p->save();
        $admin = $this->other();
        $admin->executeStatement('SET SESSION innodb_lock_wait_timeout = 1');
        try {
            $admin->executeStatement('UPDATE cache_items SET item_time = item_time WHERE item_id = ?', [$tag]);
            self::fail('the row is held');
        } catch (LockWaitTimeoutException) {
        }
        $this->db->commit();
        self::assertSame(1, $admin->executeStatement('UPDATE cache_items SET item_time = item_time + 1 WHERE item_id = ?', [$tag]));
    }

    public function testACommittedSaveHoldsNoLock(): void
    {
        $p = $this->product('P');
        $p->setEan('FREE');
        $p->save();
        $admin = $this->other();
        $admin->executeStatement('SET SESSION innodb_lock_wait_timeout = 1');
        self::assertSame(1, $admin->executeStatement('UPDATE cache_items SET item_time = item_time + 1 WHERE item_id = ?', ["pimcore\0tags\0object_properties"]));
        self::assertSame(1, $admin->executeStatement("UPDATE object_store_prod SET ean = 'ADMIN' WHERE oo_id = ?", [$p->getId()]));
        self::assertSame('ADMIN', Product::getById((int) $p->getId(), ['force' => true])?->getEan());
    }
}
