<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Tests\Unit\Stubs;

use Carbon\Carbon;
use Pimcore\Model\DataObject\Category;
use Pimcore\Model\DataObject\ClassDefinition;
use Pimcore\Model\DataObject\ClassDefinition\Data;
use Pimcore\Model\DataObject\Product;

/**
 * Generated setters are typed, and AbstractObject::set() calls them with strict types: Date takes
 * `?\Carbon\Carbon` (Date.php:339), Numeric `?int` when `integer`, `?string` when decimalSize or
 * decimalPrecision is set, else `?float` (Numeric.php:100-111), Input and Select `?string`, Checkbox
 * `?bool`, Multiselect `?array`, a many-to-one relation `?AbstractElement`. The class definition says
 * which, so an applier can check its field map against it at boot.
 */
final class TypedSettersTest extends StandInTestCase
{
    /** Every generated setter declares exactly its field definition's getParameterTypeDeclaration(). */
    public function testEachGeneratedSetterHasItsDefinitionsParameterType(): void
    {
        $checked = 0;
        foreach ([Product::class, Category::class] as $class) {
            $definition = ClassDefinition::getById($class::classId());
            self::assertNotNull($definition);
            $fields = [];
            foreach ($definition->getFieldDefinitions() as $fd) {
                $fields = [...$fields, ...($fd instanceof Data\Localizedfields ? array_values($fd->getFieldDefinitions()) : [$fd])];
            }
            foreach ($fields as $fd) {
                self::assertInstanceOf(Data\TypeDeclarationSupportInterface::class, $fd);
                $param = (new \ReflectionMethod($class, 'set' . ucfirst($fd->getName())))->getParameters()[0];
                self::assertSame(ltrim((string) $fd->getParameterTypeDeclaration(), '?\\'), ltrim((string) $param->getType(), '?\\'), "{$class}::set" . ucfirst($fd->getName()));
                self::assertTrue($param->allowsNull());
                ++$checked;
            }
        }
        self::assertSame(16, $checked);
    }

    public function testTheClassDefinitionNamesEachFieldsTypeAndLimits(): void
    {
        $class = ClassDefinition::getByName('Product');
        self::assertNotNull($class);
        $types = array_map(static fn (Data $fd): string => $fd->getFieldType(), $class->getFieldDefinitions());
        self::assertSame(['sku' => 'input', 'ean' => 'input', 'gtin' => 'input', 'localizedfields' => 'localizedfields', 'price' => 'numeric', 'weight' => 'numeric',
            'stock' => 'numeric', 'active' => 'checkbox', 'released' => 'date', 'color' => 'select', 'sizes' => 'multiselect',
            'category' => 'manyToOneRelation', 'related' => 'manyToManyObjectRelation'], $types);
        self::assertSame('?float', $class->getFieldDefinition('price')?->getParameterTypeDeclaration());
        self::assertSame('?string', $class->getFieldDefinition('weight')?->getParameterTypeDeclaration());
        self::assertSame('?int', $class->getFieldDefinition('stock')?->getParameterTypeDeclaration());
        self::assertSame('?\\Carbon\\Carbon', $class->getFieldDefinition('released')?->getParameterTypeDeclaration());
        $ean = $class->getFieldDefinition('ean');
        self::assertInstanceOf(Data\Input::class, $ean);
        self::assertSame(13, $ean->getColumnLength());
        self::assertFalse($ean->getMandatory());
        self::assertNull($class->getFieldDefinition('name'), 'a localized field is not at the top level');
        self::assertInstanceOf(Data\Input::class, $class->localized()?->getFieldDefinition('name'));
    }

    /** @return array<string, array{string, mixed, ?string}> field, value, null or the TypeError's expected type */
    public static function values(): array
    {
        return [
            'date: Carbon' => ['released', new Carbon('2026-01-02'), null],
            'date: a string' => ['released', '2026-01-02', '?Carbon\\Carbon'],
            'date: DateTimeImmutable' => ['released', new \DateTimeImmutable('2026-01-02'), '?Carbon\\Carbon'],
            'date: DateTime' => ['released', new \DateTime('2026-01-02'), '?Carbon\\Carbon'],
            'float: a float' => ['price', 9.5, null],
            'float: an int widens' => ['price', 12, null],
            'float: a numeric string' => ['price', '9.5', '?float'],
            'decimal: a string' => ['weight', '1.250', null],
            'decimal: a float' => ['weight', 1.25, '?string'],
            'decimal: an int' => ['weight', 1, '?string'],
            'integer: an int' => ['stock', 3, null],
            'integer: a float' => ['stock', 3.0, '?int'],
            'integer: a numeric string' => ['stock', '3', '?int'],
            'checkbox: an int' => ['active', 1, '?bool'],
            'input: an int' => ['sku', 100234, '?string'],
        ];
    }

    /**
     * @dataProvider values
     */
    #[\PHPUnit\Framework\Attributes\DataProvider('values')]
    public function testSetPassesTheValueToTheTypedSetterUnderStrictTypes(string $field, mixed $value, ?string $refusedAs): void
    {
        $p = new Product();
        try {
            $p->set($field, $value);
        } catch (\TypeError $e) {
            self::assertNotNull($refusedAs, 'refused: ' . $e->getMessage());
            self::assertStringContainsString("must be of type {$refusedAs}, ", $e->getMessage());

            return;
        }
        self::assertNull($refusedAs, "accepted, but Pimcore's setter refuses it");
        self::assertNotNull($p->get($field));
    }

    public function testADecimalIsRoundedToItsPrecisionAndTheValuesSurviveASaveAndALoad(): void
    {
        $p = new Product();
        $p->setKey('T')->setParent($this->folder());
        $p->set('weight', '1.23456');
        $p->set('price', 12);
        $p->set('stock', 3);
        $p->set('released', new Carbon('2026-01-02 03:04:05'));
        $p->set('sizes', ['40', '41']);
        $p->set('active', false);
        self::assertSame('1.235', $p->getWeight(), 'preSetData rounds to decimalPrecision 3');
        self::assertSame(12.0, $p->getPrice());
        $p->save();
        \Pimcore\Cache\RuntimeCache::clear();
        $loaded = Product::getById((int) $p->getId());
        self::assertNotSame($p, $loaded);
        self::assertSame('1.235', $loaded?->getWeight());
        self::assertSame(12.0, $loaded?->getPrice());
        self::assertSame(3, $loaded?->getStock());
        self::assertSame('2026-01-02 03:04:05', $loaded?->getReleased()?->format('Y-m-d H:i:s'));
        self::assertSame(['40', '41'], $loaded?->getSizes());
        self::assertFalse($loaded?->getActive());
    }
}
