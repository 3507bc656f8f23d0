<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Tests\Application\src;

use Pimingestd\PimcoreBundle\PimingestdPimcoreBundle;
use Symfony\Bundle\FrameworkBundle\FrameworkBundle;
use Symfony\Bundle\FrameworkBundle\Kernel\MicroKernelTrait;
use Symfony\Component\DependencyInjection\Loader\Configurator\ContainerConfigurator;
use Symfony\Component\HttpKernel\Kernel as BaseKernel;
use Symfony\Component\Messenger\Bridge\Doctrine\Transport\DoctrineTransportFactory;
use Symfony\Component\Routing\Loader\Configurator\RoutingConfigurator;

use function Symfony\Component\DependencyInjection\Loader\Configurator\env;
use function Symfony\Component\DependencyInjection\Loader\Configurator\service;

/**
 * A standalone Symfony app with FrameworkBundle, Messenger and this bundle (the `table` applier), configured
 * only by environment variables: DATABASE_URL (sqlite or mysql), PIMINGEST_SECRET, PIMINGEST_CALLBACK_URL,
 * and optionally PIMINGEST_TRANSPORT_DSN, PIMINGEST_REFUSE (the refusing applier) and PIMINGEST_STAND_INS (the
 * data_object applier on the Pimcore stand-ins, src/PimcoreStandIns.php). In a Pimcore project, DoctrineBundle provides what
 * `database_connection`, `doctrine` and the Doctrine transport factory stand for here.
 */
final class Kernel extends BaseKernel
{
    use MicroKernelTrait;

    public function registerBundles(): iterable
    {
        return [new FrameworkBundle(), new PimingestdPimcoreBundle()];
    }

    public function getProjectDir(): string
    {
        return \dirname(__DIR__);
    }

    /**
     * Per database and per platform: the same checkout runs on bookworm, trixie and sid, whose Symfony
     * versions compile incompatible containers. The variables are read from the environment as well, which
     * is where they are under `php -S` (its $_SERVER holds the request).
     */
    public function getCacheDir(): string
    {
        $key = hash('sha256', self::env('DATABASE_URL') . '|' . \PHP_VERSION . '|' . BaseKernel::VERSION);

        return $this->varDir() . '/cache/' . $this->environment . '-' . substr($key, 0, 12);
    }

    public function getLogDir(): string
    {
        $dir = $this->varDir() . '/log';
        if (!is_dir($dir)) {
            @mkdir($dir, 0777, true);  // Symfony 7.4's logger opens its file before the kernel makes the folder
        }

        return $dir;
    }

    private function varDir(): string
    {
        $var = self::env('PIMINGEST_APP_VAR');

        return $var !== '' ? $var : $this->getProjectDir() . '/var';
    }

    private static function env(string $name): string
    {
        $value = $_SERVER[$name] ?? $_ENV[$name] ?? getenv($name);

        return \is_string($value) ? $value : '';
    }

    protected function configureContainer(ContainerConfigurator $c): void
    {
        $c->parameters()->set('env(PIMINGEST_SECRET)', '');
        $c->extension('framework', [
            'secret' => 'test-application',
            'http_method_override' => false,
            'test' => false,
            'http_client' => ['enabled' => true],
            'messenger' => ['failure_transport' => null],
            'router' => ['utf8' => true],
        ]);
        $c->parameters()->set('env(PIMINGEST_REFUSE)', '');
        $c->extension('pimingest', [
            'secret' => env('PIMINGEST_SECRET'),
            'callback_url' => env('PIMINGEST_CALLBACK_URL'),
            // Files named refuse-*: records whose sku is in PIMINGEST_REFUSE are refused (protocol v1.1).
            'appliers' => [['match' => 'refuse-*', 'applier' => 'test.refusing'], ...(PimcoreStandIns::enabled() ? [PimcoreStandIns::RULE] : [])],
        ]);
        $services = $c->services();
        // The app's log, notices and up, in its log folder (Symfony's default logger, for want of Monolog,
        // keeps only errors, on stderr): what a Pimcore project's Monolog would keep of this bundle.
        $services->set('logger', \Symfony\Component\HttpKernel\Log\Logger::class)
            ->args(['notice', $this->getLogDir() . '/app.log']);
        if (PimcoreStandIns::enabled()) {  // files named products-* into the Pimcore stand-ins (data_object)
            PimcoreStandIns::services($services);
        }
        $services->set('database_connection', \Doctrine\DBAL\Connection::class)
            ->factory([ConnectionFactory::class, 'create'])
            ->args([env('DATABASE_URL')])
            ->public();
        $services->set('test.refusing', RefusingApplier::class)
            ->args([service('database_connection'), env('PIMINGEST_REFUSE')])
            ->tag('pimingest.applier', ['key' => 'test.refusing']);
        $services->set('doctrine', DbalRegistry::class)->args([service('database_connection')])->public();
        $services->set('messenger.transport.doctrine.factory', DoctrineTransportFactory::class)
            ->args([service('doctrine')])
            ->tag('messenger.transport_factory');
    }

    public function boot(): void
    {
        parent::boot();
        if (PimcoreStandIns::enabled()) {
            PimcoreStandIns::boot($this->getContainer()->get('database_connection'), $this->getLogDir());
        }
    }

    protected function configureRoutes(RoutingConfigurator $routes): void
    {
        $routes->import('.', 'pimingest');
    }
}
