<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Tests\Application\src;

use Doctrine\DBAL\Connection;
use Pimcore\Model\Factory;
use Pimingestd\PimcoreBundle\Tests\Stubs\StandIn;
use Symfony\Component\DependencyInjection\Loader\Configurator\ServicesConfigurator;

/**
 * The test application with the Pimcore stand-ins (tests/Stubs/, named as such: no real Pimcore runs), when
 * PIMINGEST_STAND_INS is set: files named products-* go to the data_object applier (class Product, key sku),
 * `pimcore.model.factory` is the stand-in's model factory, and each kernel boot makes the app's connection
 * Pimcore's (what Pimcore\Db::get() returns). `bin/stand-ins install` creates Pimcore's tables once, as a
 * Pimcore install would have. tests/test_pimcore_data_object.py drives it.
 */
final class PimcoreStandIns
{
    public const RULE = [
        'match' => 'products-*',
        'applier' => 'data_object',
        'options' => [
            'class' => 'Product',
            'key' => 'sku',
            'folder' => '/Products/Import',
            'fields' => [
                'title' => ['field' => 'name', 'type' => 'localized', 'language' => 'de'],
                'ean' => ['type' => 'string'],
                'stock' => ['type' => 'number'],
                'price' => ['type' => 'number'],
                'weight' => ['type' => 'number'],
            ],
        ],
    ];

    public static function enabled(): bool
    {
        return (string) ($_SERVER['PIMINGEST_STAND_INS'] ?? getenv('PIMINGEST_STAND_INS') ?: '') !== '';
    }

    /** The stand-ins' classes (Pimcore\…, Carbon\…) and their helpers, as tests/bootstrap.php loads them. */
    public static function autoload(): void
    {
        $stubs = \dirname(__DIR__, 2) . '/Stubs/';
        spl_autoload_register(static function (string $class) use ($stubs): void {
            if ($class === 'Pimcore' || str_starts_with($class, 'Pimcore\\') || str_starts_with($class, 'Carbon\\')) {
                $file = $stubs . str_replace('\\', '/', $class) . '.php';
                if (is_file($file)) {
                    require $file;
                }
            }
        });
    }

    public static function services(ServicesConfigurator $services): void
    {
        $services->set('pimcore.model.factory', Factory::class)->factory([Factory::class, 'instance'])->public();
    }

    /** Each kernel boot: the app's connection becomes Pimcore's, as Pimcore's kernel makes its own. */
    public static function boot(Connection $db, string $varDir): void
    {
        StandIn::attach($db, $varDir);
    }

    /** Pimcore's tables, as an install makes them (drops what a run before left). */
    public static function install(Connection $db, string $varDir): void
    {
        StandIn::boot($db, $varDir);
    }
}
