<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Tests\Unit\Stubs;

use Pimcore\Model\DataObject\Product;
use Pimingestd\PimcoreBundle\Tests\Stubs\StandIn;

/**
 * A class's tables take the database's collation (Pimcore creates them with only `DEFAULT
 * CHARSET=utf8mb4`, ClassDefinition/Dao.php:120-151): utf8mb4_general_ci on Pimcore 11 (its setup guide,
 * 05_DB_Setup.md:12), utf8mb4_unicode_520_ci on Pimcore 12. A listing's condition and a static getter
 * compare with it: case, accents and trailing spaces are ignored. Only a binary comparison is exact.
 */
final class CollationTest extends StandInTestCase
{
    protected function setUp(): void
    {
    }

    /** @return array<string, array{string}> */
    public static function pimcores(): array
    {
        return ['Pimcore 11' => [StandIn::PIMCORE_11], 'Pimcore 12' => [StandIn::PIMCORE_12]];
    }

    /** @return list<string|null> the skus a lookup of `$sku` finds */
    private static function find(string $sku): array
    {
        $list = new Product\Listing();
        $list->setCondition('`sku` = ?', [$sku]);

        return array_map(static fn (Product $p): ?string => $p->getSku(), $list->load());
    }

    /**
     * @dataProvider pimcores
     */
    #[\PHPUnit\Framework\Attributes\DataProvider('pimcores')]
    public function testALookupIgnoresCaseAccentsAndTrailingSpaces(string $collation): void
    {
        $this->boot($collation);
        self::assertSame($collation, $this->db->fetchOne("SELECT TABLE_COLLATION FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'object_store_prod'"));
        $this->product('AB-100');
        $this->product('Äpfel');
        self::assertSame(['AB-100'], self::find('ab-100'));
        self::assertSame(['AB-100'], self::find('AB-100   '));
        self::assertSame(['Äpfel'], self::find('apfel'));
        self::assertSame(['Äpfel'], self::find('ÄPFEL'));
        self::assertSame('AB-100', Product::getBySku('ab-100', 1)?->getSku(), 'the static getters too');
        $exact = new Product\Listing();
        $exact->setCondition('BINARY `sku` = ?', ['ab-100']);
        self::assertSame([], $exact->load(), 'a binary comparison is exact');
    }

    /**
     * @dataProvider pimcores
     */
    #[\PHPUnit\Framework\Attributes\DataProvider('pimcores')]
    public function testTheTwoCollationsDifferOnSharpS(string $collation): void
    {
        $this->boot($collation);
        $this->product('Straße-1', 'straße');
        $this->product('Strase-1', 'strase');
        if ($collation === StandIn::PIMCORE_11) {
            self::assertSame(['straße', 'strase'], self::find('strase'), 'general_ci: ß is s');
            self::assertSame([], self::find('strasse'));
        } else {
            self::assertSame(['strase'], self::find('strase'));
            self::assertSame(['straße'], self::find('strasse'), 'unicode_520_ci: ß is ss');
        }
    }
}
