<?php

declare(strict_types=1);

// The test application runs on Debian's packaged Symfony and Doctrine DBAL (Composer's registry is not
// reachable on the development machines; bookworm has Symfony 5.4 and DBAL 3.6, trixie 6.4 and 4.2, sid 7.4
// and 4.5): their autoloaders, then this bundle's own PSR-4 namespaces, then what a Composer 2 install
// provides besides (composer.php: Composer\InstalledVersions with the installed packages). A real project
// uses Composer's autoloader instead.
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

require_once __DIR__ . '/composer.php';
\Pimingestd\PimcoreBundle\Tests\Application\ComposerMetadata::load(\is_string($var = $_SERVER['PIMINGEST_APP_VAR'] ?? getenv('PIMINGEST_APP_VAR')) && $var !== '' ? $var : __DIR__ . '/var');

if (Pimingestd\PimcoreBundle\Tests\Application\src\PimcoreStandIns::enabled()) {
    Pimingestd\PimcoreBundle\Tests\Application\src\PimcoreStandIns::autoload();
}
