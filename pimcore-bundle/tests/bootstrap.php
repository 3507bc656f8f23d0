<?php

declare(strict_types=1);

// The bundle's and the test application's classes (Debian's Symfony and DBAL), then the stand-ins for
// the Pimcore classes the data_object applier calls (tests/Stubs/, loaded by the tests only).
require __DIR__ . '/Application/autoload.php';
require __DIR__ . '/Application/migrations.php';  // doctrine/migrations' AbstractMigration, where it is absent

if (is_file('/usr/share/php/Carbon/autoload.php')) {
    require_once '/usr/share/php/Carbon/autoload.php';  // Debian's php-nesbot-carbon, when installed
}

spl_autoload_register(static function (string $class): void {
    if ($class === 'Pimcore' || str_starts_with($class, 'Pimcore\\') || str_starts_with($class, 'Carbon\\')) {
        $file = __DIR__ . '/Stubs/' . str_replace('\\', '/', $class) . '.php';
        if (is_file($file)) {
            require $file;
        }
    }
});
