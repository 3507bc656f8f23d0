<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Tests\Unit\Stubs;

use Pimcore\Model\DataObject\Product;
use Pimcore\Model\Element\DuplicateFullPathException;
use Pimcore\Model\Element\Service;

/**
 * Element\Service::getValidKey() (Service.php:935-967) and the path checks of save() (correctPath(),
 * AbstractObject.php:629-675): different SKUs can map to one key, and the second is then refused as a
 * duplicate full path, before any transaction.
 */
final class KeysTest extends StandInTestCase
{
    /** @return array<string, array{string, string}> */
    public static function keys(): array
    {
        return [
            'plain' => ['AB-100', 'AB-100'],
            'slash' => ['A/1', 'A-1'],
            'angle brackets' => ['A<1>', 'A-1-'],
            'emoji (4 bytes)' => ["A\u{1F600}1", 'A-1'],
            'CJK extension B (4 bytes)' => ["\u{20000}", '-'],
            'control characters dropped' => ["A\t\n1", 'A1'],
            'zero-width space dropped (format)' => ["A\u{200B}1", 'A1'],
            'trimmed' => ['  A 1  ', 'A 1'],
            '3-byte characters kept' => ['Äpfel €', 'Äpfel €'],
            'cut at 255 characters, then trimmed' => [str_repeat('x', 254) . ' y', str_repeat('x', 254)],
            'cut counts characters' => [str_repeat('ä', 300), str_repeat('ä', 255)],
            'dots kept for objects' => ['.hidden.', '.hidden.'],
        ];
    }

    /**
     * @dataProvider keys
     */
    #[\PHPUnit\Framework\Attributes\DataProvider('keys')]
    public function testGetValidKeyMapsAsPimcoreDoes(string $key, string $valid): void
    {
        self::assertSame($valid, Service::getValidKey($key, 'object'));
        self::assertTrue(Service::isValidKey($valid, 'object'));
    }

    public function testAKeyThatIsNotValidAlreadyIsRefusedBySave(): void
    {
        $p = new Product();
        $p->setKey('A/1')->setParent($this->folder());
        $this->expectExceptionMessage('invalid key for object with id [  ] key is: [A/1]');
        $p->save();
    }

    /** @return array<string, array{string, string}> */
    public static function collisions(): array
    {
        return [
            'slash and hyphen' => ['A/1', 'A-1'],
            'slash and angle bracket' => ['A/1', 'A<1'],
            'two emoji' => ["A\u{1F600}", "A\u{1F680}"],
            'equal in the first 255 characters' => [str_repeat('k', 255) . '1', str_repeat('k', 255) . '2'],
        ];
    }

    /**
     * @dataProvider collisions
     */
    #[\PHPUnit\Framework\Attributes\DataProvider('collisions')]
    public function testTwoSkusWithOneValidKeyAreADuplicateFullPath(string $first, string $second): void
    {
        $folder = $this->folder();
        $a = $this->product(Service::getValidKey($first, 'object'), 'SKU-1', $folder);
        $b = new Product();
        $b->setKey(Service::getValidKey($second, 'object'))->setParent($folder);
        $b->setSku('SKU-2');
        try {
            $b->save();
            self::fail('the second object of one key is refused');
        } catch (DuplicateFullPathException $e) {
            self::assertSame('Duplicate full path [ ' . $a->getFullPath() . ' ] - cannot save object', $e->getMessage());
            self::assertSame($a, $e->getDuplicateElement());
            self::assertSame($b, $e->getCauseElement());
        }
        self::assertSame(0, $this->db->getTransactionNestingLevel(), 'refused before the transaction');
        self::assertNull($b->getId());
    }

    public function testPathsCompareExactlyUnlikeFieldLookups(): void
    {
        $folder = $this->folder();
        $this->product('AB-100', 'AB-100', $folder);
        $this->product('ab-100', 'ab-100', $folder);
        $this->product('Äpfel', 'x1', $folder);
        $this->product('Apfel', 'x2', $folder);
        self::assertSame(4, (int) $this->db->fetchOne("SELECT COUNT(*) FROM objects WHERE `path` = '/Products/'"), 'keys differing in case or accents are different paths (utf8_bin)');
    }
}
