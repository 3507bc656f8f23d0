<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Tests\Unit;

use PHPUnit\Framework\TestCase;
use Pimcore\Model\DataObject\Category;
use Pimcore\Model\DataObject\Concrete;
use Pimcore\Model\DataObject\Product;
use Pimcore\Model\DataObject\Service;
use Pimcore\Model\Version;
use Pimingestd\PimcoreBundle\Apply\Chunk;
use Pimingestd\PimcoreBundle\Apply\DataObjectApplier;
use Pimingestd\PimcoreBundle\Apply\RecordRejected;

/**
 * The data_object applier against the stand-ins in tests/Stubs/ (named as such: no real Pimcore runs
 * here): upsert by key, the field map's types, relations by key, publish, versioning, and a refused
 * record named by offset and field.
 */
final class DataObjectApplierTest extends TestCase
{
    protected function setUp(): void
    {
        Concrete::$saved = [];
        Concrete::$saves = 0;
        Product::$mandatory = [];
        Service::$folders = [];
        Version::$enabled = true;
        $cat = (new Category())->setKey('shoes')->setPublished(true);
        $cat->set('code', 'SHOES');
        $cat->save();
    }

    private function applier(array $extra = []): DataObjectApplier
    {
        return new DataObjectApplier($extra + [
            'class' => 'Product',
            'key' => 'sku',
            'folder' => '/Products/Import',
            'publish' => true,
            'fields' => [
                'title' => ['field' => 'name', 'type' => 'localized', 'language' => 'de'],
                'price' => ['type' => 'number'],
                'active' => ['type' => 'boolean'],
                'released' => ['type' => 'date'],
                'color' => ['type' => 'select'],
                'sizes' => ['type' => 'multiselect'],
                'category' => ['type' => 'relation', 'class' => 'Category', 'key' => 'code'],
            ],
        ]);
    }

    private static function chunk(array $records, int $first = 0): Chunk
    {
        return new Chunk(str_repeat('a', 32), 1, $first, 'products.jsonl', array_map(static fn ($r) => json_encode($r), $records));
    }

    public function testUpsertsByKeyThroughTheFieldMap(): void
    {
        $this->applier()->apply(self::chunk([
            ['sku' => 'A/1', 'title' => 'Schuh', 'price' => 9.5, 'active' => true, 'released' => '2026-01-02', 'color' => 'red', 'sizes' => ['40', '41'], 'category' => 'SHOES', 'ignored' => 'x'],
        ]));
        $saved = Concrete::$saved[Product::class];
        self::assertCount(1, $saved);
        $p = $saved[0];
        self::assertSame('A-1', $p->key);
        self::assertSame('/Products/Import', $p->parent?->path);
        self::assertTrue($p->published);
        self::assertFalse($p->versioned, 'versioning is off during the chunk');
        self::assertTrue(Version::$enabled, 'and on again after it');
        self::assertSame('Schuh', $p->get('name', 'de'));
        self::assertSame(9.5, $p->get('price'));
        self::assertTrue($p->get('active'));
        self::assertSame('2026-01-02', $p->get('released')->format('Y-m-d'));
        self::assertSame(['40', '41'], $p->get('sizes'));
        self::assertSame(Concrete::$saved[Category::class][0], $p->get('category'));
        self::assertNull($p->get('ignored'));
        // The same key again updates that object.
        $this->applier()->apply(self::chunk([['sku' => 'A/1', 'price' => 12]]));
        self::assertCount(1, Concrete::$saved[Product::class]);
        self::assertSame(12, $p->get('price'));
        $this->applier(['versioning' => true, 'publish' => false])->apply(self::chunk([['sku' => 'B']]));
        self::assertTrue(Concrete::$saved[Product::class][1]->versioned);
        self::assertFalse(Concrete::$saved[Product::class][1]->published);
    }

    /** @return array<string, array{array<string, mixed>, string}> */
    public static function refusals(): array
    {
        return [
            'no key' => [['title' => 'x'], 'record 7, field sku: the key field is missing or empty'],
            'not a number' => [['sku' => 'A', 'price' => 'cheap'], 'record 7, field price: expected a number'],
            'not a date' => [['sku' => 'A', 'released' => 'soon'], 'record 7, field released: not a date'],
            'unknown relation' => [['sku' => 'A', 'category' => 'HATS'], 'record 7, field category: no Category with code = HATS'],
            'Pimcore validation' => [['sku' => 'A', 'price' => 1], 'record 7, field name.de: Validation failed'],
        ];
    }

    /** @dataProvider refusals */
    public function testARefusedRecordIsNamedByOffsetAndField(array $record, string $message): void
    {
        Product::$mandatory = ['name.de'];  // the German name, a localized field
        try {
            $this->applier()->apply(self::chunk([['sku' => 'OK', 'title' => 'ok', 'name' => 'ok'], $record], 6));
            self::fail('accepted');
        } catch (RecordRejected $e) {
            self::assertStringStartsWith($message, $e->getMessage());
            self::assertSame(7, $e->offset);
        }
        self::assertTrue(Version::$enabled, 'versioning is restored after a refusal too');
    }

    public function testTheRequiredOptionsAreChecked(): void
    {
        $this->expectExceptionMessage('the data_object applier needs the option folder');
        new DataObjectApplier(['class' => 'Product', 'key' => 'sku']);
    }
}
