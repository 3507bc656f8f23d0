<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Tests\Unit;

use PHPUnit\Framework\Attributes\DataProvider;
use PHPUnit\Framework\TestCase;
use Pimcore\Model\DataObject\Category;
use Pimcore\Model\DataObject\Concrete;
use Pimcore\Model\DataObject\Product;
use Pimcore\Model\DataObject\Service;
use Pimcore\Model\Version;
use Pimingestd\PimcoreBundle\Apply\Chunk;
use Pimingestd\PimcoreBundle\Apply\DataObjectApplier;

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
        return new Chunk(str_repeat('a', 32), 1, $first, 'products.jsonl', array_map(static fn ($r) => json_encode($r, \JSON_THROW_ON_ERROR), $records));
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

    /** @return array<string, array{array<string, mixed>, ?string, string}> */
    public static function refusals(): array
    {
        return [
            'no key' => [['title' => 'x'], 'sku', 'the key field is missing or empty'],
            'not a number' => [['sku' => 'A', 'price' => 'cheap'], 'price', 'expected a number'],
            'not a date' => [['sku' => 'A', 'released' => 'soon'], 'released', 'not a date'],
            'unknown relation' => [['sku' => 'A', 'category' => 'HATS'], 'category', 'no Category with code = HATS'],
            'Pimcore validation' => [['sku' => 'A', 'price' => 1], 'name.de', 'Validation failed'],
        ];
    }

    /**
     * Protocol v1.1: a refused record is listed (its index in the chunk, the reason, the field) and the chunk's
     * other records are applied, before and after it.
     *
     * @dataProvider refusals
     */
    #[DataProvider('refusals')]
    public function testARefusedRecordIsListedWithItsFieldAndTheOthersAreApplied(array $record, ?string $field, string $reason): void
    {
        Product::$mandatory = ['name.de'];  // the German name, a localized field
        $chunk = self::chunk([['sku' => 'OK', 'title' => 'ok'], $record, ['sku' => 'OK2', 'title' => 'ok']], 6);
        $this->applier()->apply($chunk);
        $refused = $chunk->refused();
        self::assertCount(1, $refused);
        self::assertSame(1, $refused[0]['index']);
        self::assertSame($field, $refused[0]['field']);
        self::assertStringStartsWith($reason, $refused[0]['reason']);
        self::assertSame(['OK', 'OK2'], array_map(static fn ($p) => $p->get('sku'), Concrete::$saved[Product::class]));
        self::assertTrue(Version::$enabled, 'versioning is restored after a refusal too');
    }

    public function testATombstoneUnpublishesItsObjectOrDeletesItAndAMissingOneIsFine(): void
    {
        $this->applier()->apply(self::chunk([['sku' => 'A'], ['sku' => 'B']]));
        $chunk = self::chunk([['_deleted' => true, 'sku' => 'A'], ['_deleted' => true, 'sku' => 'GONE']]);
        $this->applier()->apply($chunk);
        self::assertSame([], $chunk->refused());
        self::assertSame(2, $chunk->tombstones());
        self::assertFalse(Concrete::$saved[Product::class][0]->published, 'unpublished by default');
        $this->applier(['deletions' => 'delete'])->apply(self::chunk([['_deleted' => true, 'sku' => 'B']]));
        self::assertSame(['A'], array_map(static fn ($p) => $p->get('sku'), Concrete::$saved[Product::class]));
        $bad = self::chunk([['_deleted' => true]]);
        $this->applier()->apply($bad);
        self::assertSame('a tombstone without its key', $bad->refused()[0]['reason']);
    }

    public function testTheRequiredOptionsAreChecked(): void
    {
        $this->expectExceptionMessage('the data_object applier needs the option folder');
        new DataObjectApplier(['class' => 'Product', 'key' => 'sku']);
    }
}
