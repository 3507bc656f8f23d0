<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Tests\Unit;

use PHPUnit\Framework\Attributes\DataProvider;
use Pimcore\Event\DataObjectEvents;
use Pimcore\Model\DataObject;
use Pimcore\Model\DataObject\Category;
use Pimcore\Model\DataObject\ClassDefinition;
use Pimcore\Model\DataObject\Product;
use Pimcore\Model\Factory;
use Pimcore\Model\Version;
use Pimingestd\PimcoreBundle\Apply\ApplierRegistry;
use Pimingestd\PimcoreBundle\Apply\Chunk;
use Pimingestd\PimcoreBundle\Apply\DataObjectApplier;
use Pimingestd\PimcoreBundle\Apply\TableApplier;
use Pimingestd\PimcoreBundle\Messenger\CheckAppliersOnStart;
use Pimingestd\PimcoreBundle\Tests\Stubs\StandIn;
use Pimingestd\PimcoreBundle\Tests\Unit\Stubs\StandInTestCase;
use Symfony\Component\DependencyInjection\ServiceLocator;
use Symfony\Component\Messenger\Event\WorkerStartedEvent;

/**
 * The data_object applier against the Pimcore stand-ins on MariaDB (tests/Stubs/: Pimcore's save
 * transaction, typed generated setters, validation, getValidKey, the runtime cache, Pimcore's collations):
 * typed values per the setters, exact lookups, object-key collisions, tombstones, the runtime cache,
 * versioning, class overrides, and the checks made when the applier is built.
 */
final class DataObjectApplierTest extends StandInTestCase
{
    private Category $shoes;

    protected function setUp(): void
    {
        parent::setUp();
        $this->shoes = $this->category('shoes', 'SHOES');
    }

    protected function tearDown(): void
    {
        ClassDefinition::getByName('Product')?->localized()?->getFieldDefinition('name')?->setMandatory(false);
        Factory::configure([]);
        parent::tearDown();
    }

    private function category(string $key, string $code): Category
    {
        $c = new Category();
        $c->setKey($key);
        $c->setParent($this->folder('/Categories'));
        $c->setCode($code);
        $c->setPublished(true);
        $c->save();

        return $c;
    }

    /** @param array<string, mixed> $extra */
    private function applier(array $extra = []): DataObjectApplier
    {
        return new DataObjectApplier($extra + [
            'class' => 'Product',
            'key' => 'sku',
            'folder' => '/Products/Import',
            'publish' => true,
            'fields' => [
                'title' => ['field' => 'name', 'type' => 'localized', 'language' => 'de'],
                'title_en' => ['field' => 'name', 'type' => 'localized', 'language' => 'en'],
                'price' => ['type' => 'number'],
                'weight' => ['type' => 'number'],
                'stock' => ['type' => 'number'],
                'ean' => ['type' => 'string'],
                'active' => ['type' => 'boolean'],
                'released' => ['type' => 'date'],
                'color' => ['type' => 'select'],
                'sizes' => ['type' => 'multiselect'],
                'category' => ['type' => 'relation', 'class' => 'Category', 'key' => 'code'],
                'related' => ['type' => 'relations', 'class' => 'Product', 'key' => 'sku'],
            ],
        ], Factory::instance());
    }

    /** @param list<array<string, mixed>|string> $records */
    private static function chunk(array $records, int $first = 0): Chunk
    {
        return new Chunk(str_repeat('a', 32), 1, $first, 'products.jsonl', array_map(
            static fn ($r) => \is_string($r) ? $r : json_encode($r, \JSON_THROW_ON_ERROR | \JSON_UNESCAPED_UNICODE | \JSON_PRESERVE_ZERO_FRACTION),
            $records,
        ));
    }

    /** The product holding sku `$sku` exactly, loaded fresh from the database. */
    private function stored(string $sku): ?Product
    {
        $ids = $this->db->fetchFirstColumn('SELECT oo_id FROM object_prod WHERE BINARY sku = BINARY ?', [$sku]);
        self::assertLessThanOrEqual(1, \count($ids), "one product per sku {$sku}");

        return $ids === [] ? null : Product::getById((int) $ids[0], ['force' => true]);
    }

    private function products(): int
    {
        return (int) $this->db->fetchOne('SELECT COUNT(*) FROM object_prod');
    }

    /**
     * Every field type reaches its generated, typed setter as the type it declares: a date as Carbon, a
     * decimal as its exact text, an integer as an int, a float as a float; the same key again updates that
     * object.
     */
    public function testEachFieldReachesItsTypedSetterAsTheTypeItDeclares(): void
    {
        $chunk = self::chunk([
            '{"active":true,"category":"SHOES","color":"red","ean":"4006381333931","price":9.5,"released":"2026-01-02","sizes":["40","41"],"sku":"A/1","stock":12,"title":"Schuh","weight":1.250}',
            ['sku' => 'B', 'related' => ['A/1'], 'stock' => 3.0],
        ]);
        $this->applier()->apply($chunk);
        self::assertSame([], $chunk->refused());
        $p = $this->stored('A/1');
        self::assertNotNull($p);
        self::assertSame('A-1', $p->getKey());
        self::assertSame('/Products/Import/A-1', $p->getRealFullPath());
        self::assertTrue($p->getPublished());
        self::assertSame('Schuh', $p->getName('de'));
        self::assertSame(9.5, $p->getPrice());
        self::assertSame('1.250', $p->getWeight());
        self::assertSame(12, $p->getStock());
        self::assertTrue($p->getActive());
        self::assertSame('2026-01-02', $p->getReleased()?->format('Y-m-d'));
        self::assertInstanceOf(\Carbon\Carbon::class, $p->getReleased());
        self::assertSame('red', $p->getColor());
        self::assertSame(['40', '41'], $p->getSizes());
        self::assertSame($this->shoes->getId(), $p->getCategory()?->getId());
        $b = $this->stored('B');
        self::assertSame([$p->getId()], array_map(static fn ($o) => $o->getId(), $b?->getRelated() ?? []));
        self::assertSame(3, $b?->getStock(), '3.0 is an integer');
        $this->applier()->apply(self::chunk([['sku' => 'A/1', 'price' => 12]]));
        self::assertSame(2, $this->products());
        self::assertSame(12.0, $this->stored('A/1')?->getPrice());
        self::assertSame('Schuh', $this->stored('A/1')?->getName('de'), 'a field the record leaves out is kept');
    }

    /** @return array<string, array{array<string, mixed>, ?string, string}> */
    public static function refusals(): array
    {
        return [
            'no key' => [['title' => 'x'], 'sku', 'the key field is missing or empty'],
            'a fraction for a key' => [['sku' => 1.5], 'sku', 'the key field is missing or empty'],
            'not a number' => [['sku' => 'A', 'price' => 'cheap'], 'price', 'expected a number'],
            'a fraction for an integer' => [['sku' => 'A', 'stock' => 2.5], 'stock', 'expected an integer, not 2.5'],
            'not a date' => [['sku' => 'A', 'released' => 'soon'], 'released', 'not a date'],
            'not true or false' => [['sku' => 'A', 'active' => 'yes'], 'active', 'expected true or false'],
            'unknown relation' => [['sku' => 'A', 'category' => 'HATS'], 'category', 'no Category with code "HATS"'],
            'longer than its column' => [['sku' => 'A', 'ean' => '40063813339310', 'title' => 'x', 'title_en' => 'x'], 'ean', 'Validation failed: Value in field [ ean ] is longer than 13 characters'],
            'mandatory localized field' => [['sku' => 'A', 'price' => 1], 'title', 'Validation failed: Empty mandatory field [ name ][ localizedfields-de ]'],
        ];
    }

    /**
     * A record Pimcore or the field map refuses is listed alone, by its index in the chunk, its reason and
     * the record's field that holds the fault (mapped back from Pimcore's "[ name ][ localizedfields-de ]");
     * the records before and after it are saved.
     *
     * @dataProvider refusals
     *
     * @param array<string, mixed> $record
     */
    #[DataProvider('refusals')]
    public function testARefusedRecordIsListedAloneByItsRecordsField(array $record, ?string $field, string $reason): void
    {
        ClassDefinition::getByName('Product')?->localized()?->getFieldDefinition('name')?->setMandatory(true);
        $chunk = self::chunk([['sku' => 'OK', 'title' => 'ok', 'title_en' => 'ok'], $record, ['sku' => 'OK2', 'title' => 'ok', 'title_en' => 'ok']], 6);
        $this->applier()->apply($chunk);
        $refused = $chunk->refused();
        self::assertCount(1, $refused, json_encode($refused, \JSON_THROW_ON_ERROR));
        self::assertSame([1, $field], [$refused[0]['index'], $refused[0]['field']]);
        self::assertStringStartsWith($reason, $refused[0]['reason']);
        self::assertNotNull($this->stored('OK'));
        self::assertNotNull($this->stored('OK2'));
        self::assertNull($this->stored('A'));
        self::assertSame(2, $this->products());
    }

    /** @return array<string, array{string}> */
    public static function collations(): array
    {
        return ['Pimcore 11 (utf8mb4_general_ci)' => [StandIn::PIMCORE_11], 'Pimcore 12 (utf8mb4_unicode_520_ci)' => [StandIn::PIMCORE_12]];
    }

    /**
     * Lookups compare keys exactly, whatever the object tables' collation: "ab-100" is not "AB-100", "apfel"
     * is not "Äpfel", "apfel " is not "apfel". Upserts, relations and tombstones alike.
     *
     * @dataProvider collations
     */
    #[DataProvider('collations')]
    public function testKeyLookupsAreExactWhateverTheCollation(string $collation): void
    {
        $this->tearDown();
        $this->boot($collation);
        $this->shoes = $this->category('shoes', 'SHOES');
        $this->applier()->apply(self::chunk([['sku' => 'AB-100', 'price' => 1], ['sku' => 'Äpfel', 'price' => 2], ['sku' => 'apfel', 'price' => 3]]));
        $chunk = self::chunk([
            ['sku' => 'ab-100', 'price' => 10, 'category' => 'shoes'],
            ['sku' => 'apfel ', 'price' => 30],
            ['_deleted' => true, 'sku' => 'apfel'],
            ['sku' => 'ab-100', 'price' => 11],
        ]);
        $this->applier()->apply($chunk);
        // "shoes" finds no category coded "SHOES"; "apfel " is a key of its own, whose object key getValidKey
        // trims to "apfel", which another object holds: refused, not saved over "apfel".
        self::assertSame([[0, 'category'], [1, 'sku']], array_map(static fn ($r) => [$r['index'], $r['field']], $chunk->refused()));
        self::assertSame(1.0, $this->stored('AB-100')?->getPrice());
        self::assertSame(11.0, $this->stored('ab-100')?->getPrice(), 'a product of its own');
        self::assertSame(2.0, $this->stored('Äpfel')?->getPrice());
        self::assertTrue($this->stored('Äpfel')?->getPublished(), 'the tombstone for "apfel" left "Äpfel" alone');
        self::assertFalse($this->stored('apfel')?->getPublished());
        self::assertSame(3.0, $this->stored('apfel')?->getPrice());
        self::assertNull($this->stored('apfel '));
    }

    /**
     * Two keys that Pimcore's getValidKey turns into one object key ("/" and 4-byte characters become "-")
     * cannot both be objects in one folder: the second is refused, saying why.
     */
    public function testKeysThatGetValidKeyMakeOneAreRefusedSayingWhy(): void
    {
        $chunk = self::chunk([['sku' => 'A/1'], ['sku' => 'A-1'], ['sku' => "B\u{1F600}"], ['sku' => 'B-'], ['sku' => 'C<1>'], ['sku' => "\u{200B}"]]);
        $this->applier()->apply($chunk);
        $refused = $chunk->refused();
        self::assertSame([1, 3, 5], array_column($refused, 'index'));
        self::assertSame(['sku', 'sku', 'sku'], array_column($refused, 'field'));
        self::assertStringContainsString("gives no object key (Pimcore's getValidKey leaves nothing of it)", $refused[2]['reason']);
        self::assertStringContainsString('the object key "A-1" (from sku "A-1") is taken in /Products/Import', $refused[0]['reason']);
        self::assertStringContainsString('getValidKey', $refused[0]['reason']);
        self::assertSame(3, $this->products());
        self::assertSame('C-1-', $this->stored('C<1>')?->getKey());
    }

    /**
     * A field the class marks unique is compared by its table's collation, not exactly: a record whose value
     * differs from another object's only in case ("gt-1" beside "GT-1") is refused by Pimcore as a "unique
     * constraint violation". The refusal names the record's field that holds the value (from the index Pimcore
     * names u_index_<field>), not no field at all.
     */
    public function testAUniqueFieldsCollisionIsRefusedNamingTheField(): void
    {
        $applier = $this->applier(['fields' => ['gtin' => ['type' => 'string'], 'code' => ['field' => 'gtin', 'type' => 'string']]]);
        $chunk = self::chunk([['sku' => 'G1', 'gtin' => 'GT-1'], ['sku' => 'G2', 'gtin' => 'gt-1'], ['sku' => 'G3', 'code' => 'GT-1']]);
        $applier->apply($chunk);
        $refused = $chunk->refused();
        self::assertSame([1, 2], array_column($refused, 'index'));
        self::assertSame(['gtin', 'gtin'], array_column($refused, 'field'));
        self::assertStringStartsWith('unique constraint violation', $refused[0]['reason']);
        self::assertStringContainsString('gtin', $refused[0]['reason']);
        self::assertSame(1, $this->products());
    }

    /**
     * A save the database interrupts is the database's failure, not the record's: here MariaDB's
     * max_statement_time (an operator's guard against runaway queries) stops the save while a second
     * connection holds the object's row ("Query execution was interrupted", SQLSTATE 70100), as a KILL QUERY,
     * a read-only server in a failover or a full disk would. The error leaves apply(), so the chunk stops and
     * is retried; the record is neither refused nor marked, and the object is unchanged. Only a data or
     * integrity error (SQLSTATE class 22 or 23) is the record's.
     */
    public function testASaveTheDatabaseInterruptsStopsTheChunkInsteadOfRefusingTheRecord(): void
    {
        $this->applier()->apply(self::chunk([['sku' => 'P', 'ean' => '1']]));
        $id = $this->stored('P')?->getId();
        $other = $this->other();
        $other->beginTransaction();
        $other->fetchOne('SELECT id FROM objects WHERE id = ? FOR UPDATE', [$id]);
        $this->db->executeStatement('SET SESSION max_statement_time = 1');
        $chunk = self::chunk([['sku' => 'P', 'ean' => '2']]);
        try {
            $this->applier()->apply($chunk);
            self::fail('the interrupted save left apply() as ' . json_encode($chunk->refused(), \JSON_THROW_ON_ERROR));
        } catch (\Doctrine\DBAL\Exception\DriverException $e) {
            self::assertSame('70100', $e->getSQLState(), $e->getMessage());
        } finally {
            $this->db->executeStatement('SET SESSION max_statement_time = 0');
            $other->rollBack();
        }
        self::assertSame([], $chunk->refused());
        self::assertSame('1', $this->stored('P')?->getEan());
    }

    /**
     * A tombstone unpublishes its object (the default) or deletes it; an object with children is refused
     * unless delete_children is set; a tombstone whose delete fails is refused alone; a key already gone is
     * fine.
     */
    public function testTombstonesUnpublishOrDeleteAndTheirFailuresAreRefusedAlone(): void
    {
        $this->applier()->apply(self::chunk([['sku' => 'A'], ['sku' => 'B'], ['sku' => 'C'], ['sku' => 'D']]));
        $child = new Product();
        $child->setKey('variant');
        $child->setParent($this->stored('C'));
        $child->setSku('C-variant');
        $child->setPublished(true);
        $child->save();
        $chunk = self::chunk([['_deleted' => true, 'sku' => 'A'], ['_deleted' => true, 'sku' => 'GONE']]);
        $this->applier()->apply($chunk);
        self::assertSame([], $chunk->refused());
        self::assertSame(2, $chunk->tombstones());
        self::assertFalse($this->stored('A')?->getPublished(), 'unpublished by default');
        \Pimcore::getEventDispatcher()->addListener(DataObjectEvents::PRE_DELETE, static function ($event): void {
            if ($event->getObject()->getKey() === 'D') {
                throw new \RuntimeException('D is locked by a workflow in /var/www/pimcore/config/workflows.yaml');
            }
        });
        $chunk = self::chunk([['_deleted' => true, 'sku' => 'B'], ['_deleted' => true, 'sku' => 'C'], ['_deleted' => true, 'sku' => 'D'], ['sku' => 'E']]);
        $this->applier(['deletions' => 'delete'])->apply($chunk);
        self::assertSame([1, 2], array_column($chunk->refused(), 'index'));
        self::assertStringContainsString('has children', $chunk->refused()[0]['reason']);
        self::assertStringContainsString('D is locked by a workflow in [path]', $chunk->refused()[1]['reason']);
        self::assertStringNotContainsString('/var/www', $chunk->refused()[1]['reason'], 'no server paths in reasons');
        self::assertNull($this->stored('B'));
        self::assertNotNull($this->stored('C'));
        self::assertNotNull($this->stored('C-variant'), 'the subtree stays');
        self::assertNotNull($this->stored('E'), 'the record after the refused tombstones is applied');
        $chunk = self::chunk([['_deleted' => true, 'sku' => 'C']]);
        $this->applier(['deletions' => 'delete', 'delete_children' => true])->apply($chunk);
        self::assertSame([], $chunk->refused());
        self::assertNull($this->stored('C'));
        self::assertNull($this->stored('C-variant'));
    }

    /**
     * A record refused at save leaves nothing behind in Pimcore's runtime cache: a later record of the same
     * key starts from the object as the database holds it, not from the refused one's values.
     */
    public function testARefusedUpdateDoesNotLingerInTheRuntimeCache(): void
    {
        $this->applier()->apply(self::chunk([['sku' => 'A', 'title' => 'Alt', 'price' => 1]]));
        $chunk = self::chunk([
            ['sku' => 'A', 'title' => 'Neu', 'ean' => str_repeat('9', 20)],  // refused: ean too long
            ['sku' => 'A', 'price' => 2],
        ]);
        $this->applier()->apply($chunk);
        self::assertSame([0], array_column($chunk->refused(), 'index'));
        $a = $this->stored('A');
        self::assertSame([2.0, 'Alt', null], [$a?->getPrice(), $a?->getName('de'), $a?->getEan()]);
    }

    /** Versioning off for the chunk (the default) is put back as it was: on only if it was on before. */
    public function testVersioningIsPutBackAsItWas(): void
    {
        $before = $this->versionFiles();  // the category saved in setUp
        Version::disable();
        $this->applier()->apply(self::chunk([['sku' => 'A']]));
        self::assertFalse(Version::isEnabled(), 'it was off before the chunk');
        Version::enable();
        $this->applier()->apply(self::chunk([['sku' => 'B']]));
        self::assertTrue(Version::isEnabled());
        self::assertSame($before, $this->versionFiles(), 'no versions while loading');
        $this->applier(['versioning' => true])->apply(self::chunk([['sku' => 'C']]));
        self::assertNotSame([], $this->versionFiles());
    }

    /** New objects are built by Pimcore's model factory: a project's class override (pimcore.models.class_overrides) holds. */
    public function testNewObjectsAreBuiltByPimcoresModelFactory(): void
    {
        Factory::configure([Product::class => SpecialProduct::class]);
        $this->applier()->apply(self::chunk([['sku' => 'A', 'price' => 5]]));
        self::assertInstanceOf(SpecialProduct::class, SpecialProduct::$built[0] ?? null);
        self::assertSame(5.0, $this->stored('A')?->getPrice());
    }

    /** Two workers creating the import folder at once: the one that loses the race finds the folder and goes on. */
    public function testAFolderAnotherWorkerCreatedAtTheSameMomentIsUsed(): void
    {
        $other = $this->other();
        \Pimcore::getEventDispatcher()->addListener(DataObjectEvents::PRE_ADD, static function ($event) use ($other): void {
            $o = $event->getObject();
            if ($o instanceof DataObject\Folder && $o->getKey() === 'Import') {
                $parent = (int) $other->fetchOne("SELECT id FROM objects WHERE path = '/' AND `key` = 'Products'");
                $other->executeStatement(
                    "INSERT IGNORE INTO objects (parentId, `type`, `key`, path, published) VALUES (?, 'folder', 'Import', '/Products/', 1)",
                    [$parent],
                );
            }
        });
        $chunk = self::chunk([['sku' => 'A']]);
        $this->applier()->apply($chunk);
        self::assertSame([], $chunk->refused());
        self::assertSame('/Products/Import/A', $this->stored('A')?->getRealFullPath());
        self::assertSame(1, (int) $this->db->fetchOne("SELECT COUNT(*) FROM objects WHERE path = '/Products/' AND `key` = 'Import'"));
    }

    /** @return array<string, array{array<string, mixed>, string}> */
    public static function misconfigured(): array
    {
        $base = ['class' => 'Product', 'key' => 'sku', 'folder' => '/P'];

        return [
            'no folder' => [['class' => 'Product', 'key' => 'sku'], 'the data_object applier needs the option folder'],
            'a misspelt class' => [['class' => 'Prodcut'] + $base, 'class: no DataObject class Prodcut'],
            'a misspelt key' => [['key' => 'skew'] + $base, 'key: Product has no field skew (no setSkew())'],
            'a key that is not text' => [['key' => 'stock'] + $base, 'the key field must be a text field'],
            'a misspelt field' => [$base + ['fields' => ['price' => ['field' => 'pirce', 'type' => 'number']]], 'fields.price: Product has no field pirce'],
            'a date into a number' => [$base + ['fields' => ['price' => ['type' => 'date']]], 'fields.price: Product::setPrice() takes float, which a date is not'],
            'a number into a date' => [$base + ['fields' => ['released' => ['type' => 'number']]], 'fields.released: Product::setReleased() takes Carbon\Carbon'],
            'a localized field without its language' => [$base + ['fields' => ['title' => ['field' => 'name', 'type' => 'localized']]], 'fields.title.language'],
            'a language on a plain field' => [$base + ['fields' => ['ean' => ['type' => 'localized', 'language' => 'de']]], 'ean on Product is not localized'],
            'an unknown type' => [$base + ['fields' => ['price' => ['type' => 'money']]], 'fields.price.type: money is not one of'],
            'a relation to a misspelt class' => [$base + ['fields' => ['category' => ['type' => 'relation', 'class' => 'Categroy', 'key' => 'code']]], 'fields.category.class: no DataObject class Categroy'],
            'a relation by a misspelt key' => [$base + ['fields' => ['category' => ['type' => 'relation', 'class' => 'Category', 'key' => 'kode']]], 'fields.category.key: Category has no field kode'],
            'an unknown deletions option' => [$base + ['deletions' => 'purge'], 'option deletions: purge'],
        ];
    }

    /** The worker's start runs the check: a misconfigured applier stops it before it takes a message. */
    public function testTheWorkersStartChecksTheAppliers(): void
    {
        $registry = new ApplierRegistry(
            [['match' => 'products*', 'applier' => 'data_object', 'options' => ['class' => 'Product', 'key' => 'sku', 'folder' => '/P', 'fields' => ['pirce' => ['type' => 'number']]]]],
            'table',
            new ServiceLocator([]),
            new TableApplier($this->db),
            Factory::instance(),
        );
        self::assertSame([WorkerStartedEvent::class => 'check'], CheckAppliersOnStart::getSubscribedEvents());
        $this->expectExceptionMessage('pimingest.appliers[0] (products*): fields.pirce: Product has no field pirce (no setPirce())');
        (new CheckAppliersOnStart($registry))->check();
    }

    /**
     * A misspelt class, field or type fails when the worker starts (ApplierRegistry::check(), run on
     * WorkerStartedEvent), naming the rule and the option, rather than refusing every record at run time.
     *
     * @dataProvider misconfigured
     *
     * @param array<string, mixed> $options
     */
    #[DataProvider('misconfigured')]
    public function testAMisconfiguredApplierFailsWhenTheWorkerStarts(array $options, string $message): void
    {
        $registry = new ApplierRegistry(
            [['match' => 'products*', 'applier' => 'data_object', 'options' => $options]],
            'table',
            new ServiceLocator([]),
            new TableApplier($this->db),
            Factory::instance(),
        );
        try {
            $registry->check();
            self::fail('a misconfigured applier was built');
        } catch (\InvalidArgumentException $e) {
            self::assertStringStartsWith('pimingest.appliers[0] (products*): ', $e->getMessage());
            self::assertStringContainsString($message, $e->getMessage());
        }
    }
}

/** A project's override of the generated Product class (Pimcore's pimcore.models.class_overrides). */
class SpecialProduct extends Product
{
    /** @var list<self> */
    public static array $built = [];

    public function __construct()
    {
        if (method_exists(parent::class, '__construct')) {
            parent::__construct();
        }
        self::$built[] = $this;
    }
}
