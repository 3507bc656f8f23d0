<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle;

use Pimingestd\PimcoreBundle\DependencyInjection\PimingestdPimcoreExtension;
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

    public function getPath(): string
    {
        return \dirname(__DIR__);
    }
}
