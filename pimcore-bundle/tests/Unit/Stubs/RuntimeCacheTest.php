<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Tests\Unit\Stubs;

use Pimcore\Cache\RuntimeCache;
use Pimcore\Model\DataObject;
use Pimcore\Model\DataObject\Product;
use Pimcore\Model\Element\ValidationException;
use Pimcore\Model\Factory;
use Pimingestd\PimcoreBundle\Tests\Stubs\OverriddenProduct;

/**
 * The RuntimeCache (lib/Cache/RuntimeCache.php): getById() returns the registered instance
 * (AbstractObject.php:198-203), listings load through getById() (Listing/Dao.php:60-75), and save()
 * registers its instance (AbstractObject.php:705). Nothing unregisters an instance whose save was
 * refused, so the next lookup of that key gets the refused values back.
 */
final class RuntimeCacheTest extends StandInTestCase
{
    public function testGetByIdAndListingsReturnTheInstanceInMemoryNotTheRow(): void
    {
        $p = $this->product('P');
        $p->setEan('UNSAVED');
        self::assertSame($p, Product::getById((int) $p->getId()));
        self::assertSame($p, DataObject::getById((int) $p->getId()));
        $list = new Product\Listing();
        $list->setCondition('`sku` = ?', ['P']);
        self::assertSame([$p], $list->load());
        self::assertSame($p, Product::getBySku('P', 1));
        self::assertSame('UNSAVED', Product::getBySku('P', 1)?->getEan(), 'the unsaved value, not the row');
        $fresh = Product::getById((int) $p->getId(), ['force' => true]);
        self::assertNotSame($p, $fresh);
        self::assertNull($fresh?->getEan(), 'force reads the row');
    }

    /** Issue 26, item 12: a refused update stays in the cache, and a later record of the same key saves it. */
    public function testARefusedUpdateStaysCachedAndALaterSaveOfTheSameKeyCommitsIt(): void
    {
        $this->product('P');
        RuntimeCache::clear();
        $first = Product::getBySku('P', 1);
        self::assertNotNull($first);
        $first->setEan('TOO-LONG-FOR-13');
        $first->setColor('red');
        try {
            $first->save();
            self::fail('refused');
        } catch (ValidationException) {
        }
        $later = Product::getBySku('P', 1);
        self::assertSame($first, $later, 'the refused instance is what the next lookup finds');
        self::assertSame('red', $later->getColor());
        $later->setEan('OK');
        $later->save();
        self::assertSame('red', $this->db->fetchOne('SELECT color FROM object_store_prod WHERE oo_id = ?', [$later->getId()]), "the refused record's other field is committed by the later one");
    }

    public function testARefusedNewObjectIsNotFoundByTheNextLookup(): void
    {
        $this->folder();
        $p = new Product();
        $p->setKey('NEW')->setParent($this->folder())->setPublished(true);
        $p->setSku('NEW');
        $p->setEan(str_repeat('9', 14));
        try {
            $p->save();
            self::fail('refused');
        } catch (ValidationException) {
        }
        self::assertNull(Product::getBySku('NEW', 1), 'its row was rolled back, and it was never registered');
    }

    public function testLoadedObjectsAreBuiltThroughTheModelFactorysClassOverrides(): void
    {
        $p = $this->product('P');
        Factory::configure([Product::class => OverriddenProduct::class]);
        RuntimeCache::clear();
        self::assertInstanceOf(OverriddenProduct::class, Product::getById((int) $p->getId()));
        self::assertInstanceOf(OverriddenProduct::class, Product::getBySku('P', 1));
        self::assertNotInstanceOf(OverriddenProduct::class, new Product(), '`new Product()` bypasses the override');
    }
}

