<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Tests\Unit;

use Pimcore\Model\DataObject\Category;
use Pimcore\Model\DataObject\ClassDefinition;
use Pimcore\Model\DataObject\ClassDefinition\Data\Localizedfields;
use Pimcore\Model\DataObject\Product;
use Pimcore\Model\Version;
use Pimingestd\PimcoreBundle\Apply\Chunk;
use Pimingestd\PimcoreBundle\Apply\DataObjectApplier;
use Pimingestd\PimcoreBundle\Tests\Unit\Stubs\StandInTestCase;

/**
 * The data_object applier against the Pimcore stand-ins in tests/Stubs/ (named as such: no real Pimcore
 * runs here, but the stand-ins behave as Pimcore does, on MariaDB; see tests/Stubs/README.md): upsert by
 * key, the field map's types, relations by key, publish, versioning, and a refused record named by
 * offset and field.
 */
final class DataObjectApplierTest extends StandInTestCase
{
    private Category $shoes;

    protected function setUp(): void
    {
        parent::setUp();
        $this->shoes = new Category();
        $this->shoes->setKey('shoes')->setParent($this->folder('/Categories'))->setPublished(true);
        $this->shoes->setCode('SHOES');
        $this->shoes->save();
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

    private static function bySku(string $sku): ?Product
    {
        return Product::getBySku($sku, ['limit' => 1, 'unpublished' => true]);
    }

    /** @return list<string> the skus of all products, in id order */
    private static function skus(): array
    {
        $list = new Product\Listing();
        $list->setUnpublished(true);
        $list->setOrderKey('id');

        return array_map(static fn (Product $p): ?string => $p->getSku(), $list->load());
    }

    public function testUpsertsByKeyThroughTheFieldMap(): void
    {
        $chunk = self::chunk([
            ['sku' => 'A/1', 'title' => 'Schuh', 'price' => 9.5, 'active' => true, 'released' => '2026-01-02', 'color' => 'red', 'sizes' => ['40', '41'], 'category' => 'SHOES', 'ignored' => 'x'],
        ]);
        $this->applier()->apply($chunk);
        self::assertSame([], $chunk->refused(), 'the unmapped field `ignored` is ignored');
        self::assertSame(['A/1'], self::skus());
        $p = self::bySku('A/1');
        self::assertSame('A-1', $p->getKey());
        self::assertSame('/Products/Import', $p->getParent()?->getFullPath());
        self::assertTrue($p->isPublished());
        self::assertSame([], array_filter($this->versionFiles(), static fn (string $f): bool => str_starts_with($f, "object/g0/{$p->getId()}/")), 'versioning is off during the chunk');
        self::assertTrue(Version::isEnabled(), 'and on again after it');
        self::assertSame('Schuh', $p->getName('de'));
        self::assertSame(9.5, $p->getPrice());
        self::assertTrue($p->getActive());
        self::assertSame('2026-01-02', $p->getReleased()?->format('Y-m-d'));
        self::assertSame(['40', '41'], $p->getSizes());
        self::assertSame($this->shoes, $p->getCategory());
        // The same key again updates that object.
        $this->applier()->apply(self::chunk([['sku' => 'A/1', 'price' => 12]]));
        self::assertSame(['A/1'], self::skus());
        self::assertSame(12.0, self::bySku('A/1')?->getPrice(), 'a ?float field: Pimcore keeps 12 as 12.0');
        $this->applier(['versioning' => true, 'publish' => false])->apply(self::chunk([['sku' => 'B']]));
        $b = self::bySku('B');
        self::assertNotSame([], array_filter($this->versionFiles(), static fn (string $f): bool => str_starts_with($f, "object/g0/{$b?->getId()}/")), 'versioning kept on');
        self::assertFalse($b?->isPublished());
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
    #[\PHPUnit\Framework\Attributes\DataProvider('refusals')]
    public function testARefusedRecordIsListedWithItsFieldAndTheOthersAreApplied(array $record, ?string $field, string $reason): void
    {
        // The German name is mandatory, on a system whose only language is German.
        $localized = ClassDefinition::getByName('Product')?->getFieldDefinition('localizedfields');
        self::assertInstanceOf(Localizedfields::class, $localized);
        $localized->languages = ['de'];
        $localized->getFieldDefinition('name')?->setMandatory(true);
        $chunk = self::chunk([['sku' => 'OK', 'title' => 'ok'], $record, ['sku' => 'OK2', 'title' => 'ok']], 6);
        $this->applier()->apply($chunk);
        $refused = $chunk->refused();
        self::assertCount(1, $refused);
        self::assertSame(1, $refused[0]['index']);
        self::assertSame($field, $refused[0]['field']);
        self::assertStringStartsWith($reason, $refused[0]['reason']);
        self::assertSame(['OK', 'OK2'], self::skus());
        self::assertTrue(Version::isEnabled(), 'versioning is restored after a refusal too');
    }

    public function testATombstoneUnpublishesItsObjectOrDeletesItAndAMissingOneIsFine(): void
    {
        $this->applier()->apply(self::chunk([['sku' => 'A'], ['sku' => 'B']]));
        $chunk = self::chunk([['_deleted' => true, 'sku' => 'A'], ['_deleted' => true, 'sku' => 'GONE']]);
        $this->applier()->apply($chunk);
        self::assertSame([], $chunk->refused());
        self::assertSame(2, $chunk->tombstones());
        self::assertFalse(self::bySku('A')?->isPublished(), 'unpublished by default');
        self::assertSame(0, (int) $this->other()->fetchOne("SELECT published FROM objects WHERE `key` = 'A'"));
        $this->applier(['deletions' => 'delete'])->apply(self::chunk([['_deleted' => true, 'sku' => 'B']]));
        self::assertSame(['A'], self::skus());
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
