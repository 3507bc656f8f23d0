<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Routing;

use Pimingestd\PimcoreBundle\Controller\IngestController;
use Symfony\Component\Config\Loader\Loader;
use Symfony\Component\Routing\Route;
use Symfony\Component\Routing\RouteCollection;

/**
 * The two routes under the configured prefix. Import it from the app's routing:
 * `pimingest: {resource: ., type: pimingest}`.
 */
final class RouteLoader extends Loader
{
    public function __construct(private readonly string $prefix)
    {
        parent::__construct();
    }

    public function load(mixed $resource, ?string $type = null): RouteCollection
    {
        $routes = new RouteCollection();
        $prefix = '/' . trim($this->prefix, '/');
        $routes->add('pimingest_chunks', new Route($prefix . '/chunks', ['_controller' => IngestController::class . '::chunk'], methods: ['POST']));
        $routes->add('pimingest_complete', new Route($prefix . '/complete', ['_controller' => IngestController::class . '::complete'], methods: ['POST']));

        return $routes;
    }

    public function supports(mixed $resource, ?string $type = null): bool
    {
        return $type === 'pimingest';
    }
}
