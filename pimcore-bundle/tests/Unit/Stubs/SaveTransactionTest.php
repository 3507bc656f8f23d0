<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Tests\Unit\Stubs;

use Doctrine\DBAL\ConnectionException;
use Doctrine\DBAL\Exception\LockWaitTimeoutException;
use Pimcore\Db;
use Pimcore\Event\DataObjectEvents;
use Pimcore\Logger;
use Pimcore\Model\DataObject\Product;
use Pimcore\Model\Element\ValidationException;
use Pimingestd\PimcoreBundle\Tests\Stubs\ReverseLocker;
use Pimingestd\PimcoreBundle\Tests\Stubs\StandIn;

/**
 * AbstractObject::save() (AbstractObject.php:482-622 at v11.4.1): its own transaction on Db::get(), the
 * connection the bundle shares, and its retry loop: 5 attempts for a RetryableException (deadlock, lock
 * wait timeout), each rolled back first. Deadlocks here are real: a second MariaDB connection, in another
 * process, locks the rows in the reverse order.
 */
final class SaveTransactionTest extends StandInTestCase
{
    private function existing(): Product
    {
        $p = $this->product('P-1');
        $p->setEan('OLD');
        $p->save();
        $this->events = [];

        return $p;
    }

    public function testSaveOpensItsOwnTransactionOnTheConnectionThePimcoreDbReturns(): void
    {
        $levels = [];
        \Pimcore::getEventDispatcher()->addListener(DataObjectEvents::PRE_UPDATE_VALIDATION_EXCEPTION, function () use (&$levels): void {
            $levels[] = $this->db->getTransactionNestingLevel();
        });
        self::assertSame($this->db, Db::get(), 'Pimcore\Db::get() is the very connection the stand-in was booted with');
        $this->product('P-1');
        self::assertSame([1], $levels, 'the save ran inside one transaction it opened itself');
        self::assertSame(0, $this->db->getTransactionNestingLevel(), 'and committed it');
        $this->db->beginTransaction();
        $this->product('P-2');
        self::assertSame([1, 2], $levels, 'inside a transaction the caller opened, the save is a nested transaction of the same connection');
        $this->db->rollBack();
        self::assertFalse($this->other()->fetchOne("SELECT id FROM objects WHERE `key` = 'P-2'"), 'the caller rolled it back, and the save with it');
    }

    /**
     * Pimcore never enables DBAL's savepoints: on DBAL 3, a save refused inside a transaction the caller
     * opened rolls back only a nesting level, which marks the caller's whole transaction rollback-only, and
     * its commit throws. (DBAL 4 always nests with savepoints: the refused save is undone alone.)
     */
    public function testARefusedSaveNestedInTheCallersTransactionMarksItRollbackOnlyOnDbal3(): void
    {
        $this->db->executeStatement('CREATE TABLE IF NOT EXISTS outer_marks (id int PRIMARY KEY)');
        $this->db->executeStatement('DELETE FROM outer_marks');
        $this->folder();
        $this->db->beginTransaction();
        $this->db->executeStatement('INSERT INTO outer_marks VALUES (1)');
        $p = new Product();
        $p->setKey('BAD')->setParent($this->folder())->setPublished(true);
        $p->setEan(str_repeat('9', 14));
        try {
            $p->save();
            self::fail('a 14-character EAN in a 13-character Input is refused');
        } catch (ValidationException $e) {
            self::assertStringContainsString('is longer than 13 characters', $e->getMessage());
        }
        if (StandIn::dbalMajor() === 3) {
            self::assertTrue($this->db->isRollbackOnly(), 'DBAL 3 marks the outer transaction rollback-only');
            try {
                $this->db->commit();
                self::fail('the outer commit must throw');
            } catch (ConnectionException $e) {
                self::assertStringContainsString('marked for rollback only', $e->getMessage());
            }
            $this->db->rollBack();
            self::assertFalse($this->db->fetchOne('SELECT id FROM outer_marks'), "the caller's own write is lost with it");
        } else {
            $this->db->commit();
            self::assertSame(1, (int) $this->db->fetchOne('SELECT id FROM outer_marks'), "DBAL 4: a savepoint undid the save alone");
        }
        self::assertFalse($this->db->fetchOne("SELECT id FROM objects WHERE `key` = 'BAD'"), 'the refused object was never committed');
    }

    public function testADeadlockInsideSaveIsRolledBackAndRetriedAndTheSaveSucceeds(): void
    {
        $p = $this->existing();
        $id = $p->getId();
        // The save locks the `objects` row, then the store row; the second connection holds the store
        // row, waits until the save blocks on it, then asks for the `objects` row.
        $locker = ReverseLocker::start(self::url(), ["UPDATE object_store_prod SET ean = 'OTHER' WHERE oo_id = {$id}"], "SELECT id FROM objects WHERE id = {$id} FOR UPDATE");
        $p->setEan('MINE');
        $p->save();
        self::assertSame('committed', $locker->finish(), 'InnoDB chose the save as the victim; the other transaction committed');
        self::assertCount(1, Logger::messages('warning'));
        self::assertStringStartsWith('Unable to finish transaction (1. run)', Logger::messages('warning')[0]);
        self::assertStringContainsString('Deadlock', Logger::messages('warning')[0]);
        self::assertSame('MINE', $this->other()->fetchOne("SELECT ean FROM object_store_prod WHERE oo_id = {$id}"), 'the retry ran after the other transaction and won');
        self::assertSame(0, $this->db->getTransactionNestingLevel());
        self::assertSame(
            [DataObjectEvents::PRE_UPDATE => 1, DataObjectEvents::PRE_UPDATE_VALIDATION_EXCEPTION => 2, DataObjectEvents::POST_UPDATE => 1],
            $this->events,
            'pre and post events once per save; the validation event once per attempt',
        );
    }

    /**
     * Issue 26, item 2: inside the caller's transaction, a deadlock makes InnoDB roll back the caller's
     * whole transaction; save()'s retry then runs in autocommit, and its writes are committed at once,
     * outside the caller's transaction, while the caller's own writes are gone. On DBAL 3 the retry's
     * inner commit then finds the rollback-only mark, and save() throws although its writes are committed.
     */
    public function testADeadlockInANestedSaveCommitsTheSaveOutsideTheCallersTransaction(): void
    {
        $this->db->executeStatement('CREATE TABLE IF NOT EXISTS outer_marks (id int PRIMARY KEY)');
        $this->db->executeStatement('DELETE FROM outer_marks');
        $p = $this->existing();
        $id = $p->getId();
        $this->db->beginTransaction();
        $this->db->executeStatement('INSERT INTO outer_marks VALUES (7)');
        $locker = ReverseLocker::start(self::url(), ["UPDATE object_store_prod SET ean = 'OTHER' WHERE oo_id = {$id}"], "SELECT id FROM objects WHERE id = {$id} FOR UPDATE");
        $p->setEan('MINE');
        $thrown = null;
        try {
            $p->save();
        } catch (\Exception $e) {
            $thrown = $e;
        }
        self::assertSame('committed', $locker->finish());
        self::assertStringStartsWith('Unable to finish transaction (1. run)', Logger::messages('warning')[0] ?? '');
        if (StandIn::dbalMajor() === 3) {
            self::assertInstanceOf(ConnectionException::class, $thrown, 'DBAL 3: the retry\'s commit meets the rollback-only mark');
            self::assertStringContainsString('marked for rollback only', $thrown->getMessage());
            self::assertSame(1, $this->db->getTransactionNestingLevel());
        } else {
            self::assertNotNull($thrown, 'DBAL 4: the savepoints the deadlock erased cannot be released or rolled back to');
            self::assertGreaterThan(1, $this->db->getTransactionNestingLevel(), 'DBAL 4: a failed rollback to a savepoint leaves the nesting level up');
        }
        $watcher = $this->other();
        self::assertSame('MINE', $watcher->fetchOne("SELECT ean FROM object_store_prod WHERE oo_id = {$id}"), 'committed while the caller still thinks its transaction is open');
        self::assertFalse($watcher->fetchOne('SELECT id FROM outer_marks'));
        self::assertTrue($this->db->isTransactionActive(), 'DBAL still counts an open transaction');
        try {
            $this->db->commit();
        } catch (\Throwable) {
            // DBAL 3: rollback-only; either way nothing of the caller's is left to commit
        }
        self::assertFalse($watcher->fetchOne('SELECT id FROM outer_marks'), "the caller's write is lost");
        self::assertSame('MINE', $watcher->fetchOne("SELECT ean FROM object_store_prod WHERE oo_id = {$id}"), "and the save's is kept");
    }

    public function testALockWaitTimeoutIsRetriedFiveTimesThenThrown(): void
    {
        $p = $this->existing();
        $holder = $this->other();
        $holder->beginTransaction();
        $holder->executeStatement('UPDATE object_store_prod SET ean = ? WHERE oo_id = ?', ['HELD', $p->getId()]);
        $this->db->executeStatement('SET SESSION innodb_lock_wait_timeout = 1');
        $p->setEan('MINE');
        try {
            $p->save();
            self::fail('the save gives up');
        } catch (LockWaitTimeoutException) {
        }
        $holder->rollBack();
        self::assertCount(4, Logger::messages('warning'), 'four retries');
        self::assertStringStartsWith('Unable to finish transaction (4. run)', Logger::messages('warning')[3]);
        self::assertStringStartsWith('Finally giving up', Logger::messages('error')[0]);
        self::assertSame(0, $this->db->getTransactionNestingLevel());
        self::assertSame('OLD', $this->db->fetchOne('SELECT ean FROM object_store_prod WHERE oo_id = ?', [$p->getId()]));
        self::assertSame([DataObjectEvents::PRE_UPDATE => 1, DataObjectEvents::PRE_UPDATE_VALIDATION_EXCEPTION => 5, DataObjectEvents::POST_UPDATE_FAILURE => 1], $this->events);
    }

    /**
     * A field marked unique (Pimcore: a unique index on its column): a second object with the same value,
     * in the table's case-insensitive collation, is refused as ValidationException('unique constraint
     * violation') (AbstractObject.php:553-555), after its `objects` row was inserted and rolled back.
     */
    public function testAUniqueFieldsDuplicateIsAValidationExceptionInTheCollationsSense(): void
    {
        $a = $this->product('A');
        $a->setGtin('ABC-1');
        $a->save();
        $b = $this->product('B');
        $b->setGtin('abc-1');
        try {
            $b->save();
            self::fail('the second abc-1 is refused');
        } catch (ValidationException $e) {
            self::assertSame('unique constraint violation', $e->getMessage());
        }
        self::assertNull($this->db->fetchOne('SELECT gtin FROM object_store_prod WHERE oo_id = ?', [$b->getId()]));
        self::assertSame(0, $this->db->getTransactionNestingLevel());
    }

    /**
     * correctPath() checks the path before the transaction; a second process inserting the same path in
     * between makes the insert fail on the unique (path, key) index, which save() turns into
     * ValidationException('unique constraint violation'): two workers creating one key (or one folder) collide.
     */
    public function testASecondProcessTakingThePathAfterTheCheckIsAUniqueConstraintViolation(): void
    {
        $folder = $this->folder();
        $locker = ReverseLocker::start(self::url(), ["INSERT INTO objects (parentId, `type`, `key`, `path`, published) VALUES ({$folder->getId()}, 'object', 'RACE', '/Products/', 1)"], 'SELECT 1', 0);
        $p = new Product();
        $p->setKey('RACE')->setParent($folder);
        try {
            $p->save();
            self::fail('the second insert of the path is refused');
        } catch (ValidationException $e) {
            self::assertSame('unique constraint violation', $e->getMessage());
            self::assertInstanceOf(\Doctrine\DBAL\Exception\UniqueConstraintViolationException::class, $e->getPrevious());
        }
        self::assertSame('committed', $locker->finish());
        self::assertSame(0, $this->db->getTransactionNestingLevel());
    }
}
