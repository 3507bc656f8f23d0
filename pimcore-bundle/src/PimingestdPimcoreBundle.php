<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle;

use Pimingestd\PimcoreBundle\DependencyInjection\PimingestdPimcoreExtension;
use Pimingestd\PimcoreBundle\DependencyInjection\TransportGuard;
use Symfony\Component\DependencyInjection\Extension\ExtensionInterface;
use Symfony\Component\HttpKernel\Bundle\Bundle;

/**
 * Receives pimingestd's protocol v1 and applies each chunk into Pimcore exactly once (README.md).
 */
final class PimingestdPimcoreBundle extends Bundle
{
    public function getContainerExtension(): ExtensionInterface
    {
        return new PimingestdPimcoreExtension();
    }

    /** Refuses to boot on a transport that cannot queue a chunk in the ledger's transaction (TransportGuard). */
    public function boot(): void
    {
        $guard = $this->container?->get(TransportGuard::class);
        if ($guard instanceof TransportGuard) {
            $guard->check();
        }
    }

    public function getPath(): string
    {
        return \dirname(__DIR__);
    }
}
