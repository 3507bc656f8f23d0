<?php

declare(strict_types=1);

/*
 * Every package composer.json requires is installed here in a version its constraint admits, as
 * `composer install` would have insisted: checked with Composer's own semver (Debian's php-composer-semver,
 * a dependency of its composer package) against the versions the test application's Composer metadata
 * lists (tests/Application/composer.php: dpkg's). Exit 1, naming each mismatch, otherwise.
 */

require \dirname(__DIR__) . '/autoload.php';
require_once '/usr/share/php/Composer/Semver/autoload.php';

use Composer\InstalledVersions;
use Composer\Semver\Semver;

$composer = json_decode((string) file_get_contents(\dirname(__DIR__, 3) . '/composer.json'), true, 16, \JSON_THROW_ON_ERROR);
$bad = [];
$seen = [];
foreach ($composer['require'] as $package => $constraint) {
    if ($package === 'php') {
        $version = \PHP_MAJOR_VERSION . '.' . \PHP_MINOR_VERSION . '.' . \PHP_RELEASE_VERSION;
    } elseif (InstalledVersions::isInstalled($package)) {
        $version = (string) InstalledVersions::getPrettyVersion($package);
    } else {
        $bad[] = "{$package} is required ({$constraint}) but not installed";
        continue;
    }
    if (!Semver::satisfies($version, $constraint)) {
        $bad[] = "{$package} {$version} is installed, but composer.json requires {$constraint}";
    }
    $seen[] = "{$package} {$version}";
}
if ($bad !== []) {
    fwrite(\STDERR, implode("\n", $bad) . "\n");
    exit(1);
}
echo implode(', ', $seen), "\n";
