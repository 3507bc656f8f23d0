<?php

declare(strict_types=1);

// The test application runs on Debian's packaged Symfony 5.4 and Doctrine DBAL 3.6 (Composer's registry is
// not reachable on the development machines): their autoloaders, then this bundle's own PSR-4 namespaces.
// A real project uses Composer's autoloader instead.
$debian = '/usr/share/php';
foreach ([
    'Symfony/Bundle/FrameworkBundle', 'Symfony/Component/Messenger', 'Symfony/Component/Messenger/Bridge/Doctrine',
    'Symfony/Component/HttpClient', 'Symfony/Component/Console', 'Symfony/Component/Dotenv',
    'Doctrine/DBAL', 'Doctrine/Persistence', 'Psr/Log',
] as $package) {
    require_once "{$debian}/{$package}/autoload.php";
}

spl_autoload_register(static function (string $class): void {
    $roots = [
        'Pimingestd\\PimcoreBundle\\Tests\\' => \dirname(__DIR__) . '/',
        'Pimingestd\\PimcoreBundle\\' => \dirname(__DIR__, 2) . '/src/',
    ];
    foreach ($roots as $prefix => $dir) {
        if (str_starts_with($class, $prefix)) {
            $file = $dir . str_replace('\\', '/', substr($class, \strlen($prefix))) . '.php';
            if (is_file($file)) {
                require $file;
            }

            return;
        }
    }
});

if (Pimingestd\PimcoreBundle\Tests\Application\src\PimcoreStandIns::enabled()) {
    Pimingestd\PimcoreBundle\Tests\Application\src\PimcoreStandIns::autoload();
}
