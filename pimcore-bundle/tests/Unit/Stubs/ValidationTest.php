<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Tests\Unit\Stubs;

use Pimcore\Model\DataObject\ClassDefinition;
use Pimcore\Model\DataObject\ClassDefinition\Data\Localizedfields;
use Pimcore\Model\DataObject\Product;
use Pimcore\Model\Element\ValidationException;

/**
 * Concrete::update() (Concrete.php:120-199) validates inside save()'s transaction, after a new object's
 * `objects` row was inserted: the mandatory checks only for a published object (getOmitMandatoryCheck(),
 * Concrete.php:466), an Input's length always (Input.php:222), localized fields only when published
 * (Localizedfields.php:652), and a refusal rolls the save back.
 */
final class ValidationTest extends StandInTestCase
{
    private function draft(string $key, bool $published): Product
    {
        $p = new Product();
        $p->setKey($key)->setParent($this->folder())->setPublished($published);

        return $p;
    }

    private static function refusal(Product $p): string
    {
        try {
            $p->save();
        } catch (ValidationException $e) {
            return $e->getMessage();
        }
        self::fail('the save was not refused');
    }

    public function testAMandatoryFieldIsCheckedOnlyWhenTheObjectIsPublished(): void
    {
        ClassDefinition::getByName('Product')?->getFieldDefinition('sku')?->setMandatory(true);
        $this->draft('UNPUBLISHED', false)->save();
        self::assertSame('Validation failed: Empty mandatory field [ sku ]', self::refusal($this->draft('PUBLISHED', true)));
        $p = $this->draft('ZERO', true);
        $p->setSku('0');
        $p->save();
        self::assertSame(['UNPUBLISHED', 'ZERO'], $this->db->fetchFirstColumn("SELECT `key` FROM objects WHERE `type` = 'object' ORDER BY id"), '"0" is not empty; the refused one left no row');
        $forced = $this->draft('FORCED', false);
        $forced->setOmitMandatoryCheck(false);
        self::assertSame('Validation failed: Empty mandatory field [ sku ]', self::refusal($forced), 'setOmitMandatoryCheck(false) checks an unpublished object too');
    }

    public function testAnInputLongerThanItsColumnIsRefusedPublishedOrNot(): void
    {
        foreach ([true, false] as $published) {
            $p = $this->draft('LONG', $published);
            $p->setEan('12345678901234');
            self::assertSame('Validation failed: Value in field [ ean ] is longer than 13 characters', self::refusal($p));
        }
        $p = $this->draft('FITS', true);
        $p->setEan('ÄÖÜ4567890123');
        $p->save();
        self::assertSame('ÄÖÜ4567890123', $this->db->fetchOne('SELECT ean FROM object_store_prod WHERE oo_id = ?', [$p->getId()]), 'counted in characters, not bytes');
    }

    public function testLocalizedFieldsAreCheckedOnlyWhenPublishedAndNamedWithTheirLanguage(): void
    {
        $localized = ClassDefinition::getByName('Product')?->getFieldDefinition('localizedfields');
        self::assertInstanceOf(Localizedfields::class, $localized);
        $localized->getFieldDefinition('name')?->setMandatory(true);
        $p = $this->draft('L', true);
        $p->setName('Schuh', 'de');
        self::assertSame('Validation failed: Empty mandatory field [ name ][ localizedfields-en ]', self::refusal($p));
        $p->setName(null, 'de');
        self::assertSame(
            'Validation failed: Empty mandatory field [ name ][ localizedfields-de ] / Empty mandatory field [ name ][ localizedfields-en ]',
            self::refusal($p),
        );
        $long = $this->draft('LONGDESC', false);
        $long->setDescription(str_repeat('x', 256), 'de');
        $long->save();
        self::assertSame(255, (int) $this->db->fetchOne("SELECT CHAR_LENGTH(description) FROM object_localized_data_prod WHERE language = 'de'"),
            "unpublished: not even the length is checked, and under Pimcore's sql_mode '' MariaDB cuts the text silently");
    }

    public function testNumericDataIsCheckedAlwaysButItsLimitsOnlyWhenPublished(): void
    {
        $stock = ClassDefinition::getByName('Product')?->getFieldDefinition('stock');
        self::assertInstanceOf(\Pimcore\Model\DataObject\ClassDefinition\Data\Numeric::class, $stock);
        $stock->unsigned = true;
        $p = $this->draft('N', false);
        $p->setStock(-1);
        $p->save();
        $q = $this->draft('M', true);
        $q->setStock(-1);
        self::assertSame('Validation failed: Value in field [ stock ] is not unsigned (bigger than 0)', self::refusal($q));
    }

    public function testARefusedNewObjectLeavesNoRowAndItsIdFromTheRolledBackInsert(): void
    {
        $p = $this->draft('GONE', true);
        $p->setEan(str_repeat('1', 20));
        self::refusal($p);
        self::assertNotNull($p->getId(), 'the insert ran (and got an id) before the validation');
        self::assertFalse($this->db->fetchOne('SELECT id FROM objects WHERE id = ?', [$p->getId()]));
        self::assertSame(0, $this->db->getTransactionNestingLevel());
    }
}
