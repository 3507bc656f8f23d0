<?php

declare(strict_types=1);

require \dirname(__DIR__) . '/autoload.php';

use Pimingestd\PimcoreBundle\Tests\Application\src\Kernel;
use Symfony\Component\HttpFoundation\Request;

$kernel = new Kernel($_SERVER['APP_ENV'] ?? 'prod', (bool) ($_SERVER['APP_DEBUG'] ?? false));
$request = Request::createFromGlobals();
$response = $kernel->handle($request);
$response->send();
$kernel->terminate($request, $response);
