<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Tests\Unit\Stubs;

use Pimcore\Model\DataObject\Product;
use Pimingestd\PimcoreBundle\Tests\Stubs\StandIn;

/**
 * The stand-in's own lifecycle: boot() gives each test an empty Pimcore; attach() and install() leave the
 * rows alone, for a long-running process such as the test application's worker.
 */
final class StandInBootTest extends StandInTestCase
{
    public function testAttachAndInstallKeepTheObjectsAndBootClearsThem(): void
    {
        $p = $this->product('KEPT');
        StandIn::attach($this->db, $this->project);
        self::assertFalse(StandIn::install($this->db), 'the tables are there as the definitions make them');
        self::assertSame('KEPT', Product::getById((int) $p->getId())?->getSku());
        self::assertNotSame($p, Product::getById((int) $p->getId()), 'attach() starts a fresh RuntimeCache');
        StandIn::boot($this->db, $this->project);
        self::assertNull(Product::getById((int) $p->getId()));
        self::assertSame(['/'], $this->db->fetchFirstColumn('SELECT CONCAT(`path`, `key`) FROM objects'));
    }

    public function testTheTablesAreMadeAgainForAnotherCollation(): void
    {
        $other = StandIn::pimcoreCollation() === StandIn::PIMCORE_11 ? StandIn::PIMCORE_12 : StandIn::PIMCORE_11;
        self::assertTrue(StandIn::install($this->db, $other));
        self::assertSame($other, $this->db->fetchOne("SELECT TABLE_COLLATION FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'object_store_prod'"));
        self::assertFalse(StandIn::install($this->db, $other));
    }
}
