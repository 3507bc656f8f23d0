<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Tests\Unit\Stubs;

use Pimcore\Cache\RuntimeCache;
use Pimcore\Event\DataObjectEvents;
use Pimcore\Model\DataObject;
use Pimcore\Model\DataObject\Product;

/**
 * AbstractObject::delete() (AbstractObject.php:435-483) with doDelete() (416-427): the object's whole
 * subtree goes, children, variants and folders, unpublished ones included, each through its own delete()
 * and events, in one transaction; then the instance is unregistered from the RuntimeCache.
 */
final class DeleteTest extends StandInTestCase
{
    public function testDeleteRemovesTheWholeSubtreeVariantsAndUnpublishedChildrenIncluded(): void
    {
        $folder = $this->folder();
        $parent = $this->product('PARENT', null, $folder);
        $variant = new Product();
        $variant->setKey('VARIANT')->setParent($parent)->setType(DataObject::OBJECT_TYPE_VARIANT);
        $variant->save();
        $child = $this->product('CHILD', null, null, false);
        $child->setParent($parent);
        $child->save();
        $sub = new DataObject\Folder();
        $sub->setKey('sub')->setParent($child);
        $sub->save();
        $grandchild = $this->product('GRANDCHILD', null, $sub);
        $other = $this->product('OTHER', null, $folder);
        self::assertTrue($parent->hasChildren());
        $this->events = [];

        $parent->delete();

        self::assertSame(
            ['/', '/Products', '/Products/OTHER'],
            $this->db->fetchFirstColumn("SELECT CONCAT(`path`, `key`) FROM objects ORDER BY id"),
        );
        self::assertSame([(string) $other->getId()], array_map('strval', $this->db->fetchFirstColumn('SELECT oo_id FROM object_store_prod')), "the class's rows went with them");
        self::assertSame(5, $this->events[DataObjectEvents::POST_DELETE], 'five objects deleted, each with its events');
        self::assertNull(Product::getById((int) $grandchild->getId()));
        self::assertTrue(RuntimeCache::isRegistered('object_' . $parent->getId()));
        self::assertNull(RuntimeCache::get('object_' . $parent->getId()), 'unregistered');
        self::assertSame(0, $this->db->getTransactionNestingLevel());
    }

    public function testAFailingChildDeleteRollsTheWholeSubtreeBack(): void
    {
        $parent = $this->product('PARENT');
        $child = $this->product('CHILD', null, null);
        $child->setParent($parent);
        $child->save();
        \Pimcore::getEventDispatcher()->addListener(DataObjectEvents::PRE_DELETE, static function (\Pimcore\Event\Model\DataObjectEvent $e) use ($child): void {
            if ($e->getObject()->getId() === $child->getId()) {
                throw new \RuntimeException('a listener refuses');
            }
        });
        try {
            $parent->delete();
            self::fail('the delete fails');
        } catch (\RuntimeException $e) {
            self::assertSame('a listener refuses', $e->getMessage());
        }
        self::assertSame(2, (int) $this->db->fetchOne("SELECT COUNT(*) FROM objects WHERE `type` = 'object'"));
        self::assertSame(1, $this->events[DataObjectEvents::POST_DELETE_FAILURE]);
    }
}
