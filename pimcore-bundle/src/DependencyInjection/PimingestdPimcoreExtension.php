<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\DependencyInjection;

use Doctrine\DBAL\Connection;
use Pimingestd\PimcoreBundle\Ack\AckSender;
use Pimingestd\PimcoreBundle\Apply\ApplierRegistry;
use Pimingestd\PimcoreBundle\Apply\TableApplier;
use Pimingestd\PimcoreBundle\Command\SetupCommand;
use Pimingestd\PimcoreBundle\Command\StatusCommand;
use Pimingestd\PimcoreBundle\Controller\IngestController;
use Pimingestd\PimcoreBundle\Ledger\Ledger;
use Pimingestd\PimcoreBundle\Messenger\ApplyChunk;
use Pimingestd\PimcoreBundle\Messenger\ApplyChunkHandler;
use Pimingestd\PimcoreBundle\Messenger\CheckAppliersOnStart;
use Pimingestd\PimcoreBundle\Routing\RouteLoader;
use Symfony\Component\DependencyInjection\Argument\ServiceLocatorArgument;
use Symfony\Component\DependencyInjection\Argument\TaggedIteratorArgument;
use Symfony\Component\DependencyInjection\ContainerBuilder;
use Symfony\Component\DependencyInjection\Extension\Extension;
use Symfony\Component\DependencyInjection\Extension\PrependExtensionInterface;
use Symfony\Component\DependencyInjection\Reference;

/**
 * The bundle's services. The database connection is the app's default DBAL connection
 * (`database_connection`, which in Pimcore is Pimcore's own), so the ledger and the records' effect
 * share one transaction.
 */
final class PimingestdPimcoreExtension extends Extension implements PrependExtensionInterface
{
    public function getAlias(): string
    {
        return 'pimingest';
    }

    /** The migrations' namespace and folder, as `doctrine_migrations.migrations_paths` takes them. */
    public const MIGRATIONS = ['Pimingestd\\PimcoreBundle\\Migrations' => __DIR__ . '/../Migrations'];

    public function prepend(ContainerBuilder $container): void
    {
        // Pimcore runs bundles' migrations through DoctrineMigrationsBundle, from the paths configured in
        // `doctrine_migrations.migrations_paths` (Pimcore's docs: Extending Pimcore > Bundle Developers Guide >
        // Installers); the bundle adds its own where that bundle is installed, as Pimcore's own bundles do.
        if ($container->hasExtension('doctrine_migrations')) {
            $container->prependExtensionConfig('doctrine_migrations', ['migrations_paths' => self::MIGRATIONS]);
        }
        $container->setParameter('env(PIMINGEST_TRANSPORT_DSN)', 'doctrine://default?queue_name=pimingest&redeliver_timeout=300');
        $container->prependExtensionConfig('framework', [
            'messenger' => [
                'transports' => ['pimingest' => '%env(PIMINGEST_TRANSPORT_DSN)%'],
                'routing' => [ApplyChunk::class => 'pimingest'],
            ],
        ]);
    }

    /**
     * The data_object applier lets Pimcore own its save transactions: a bus middleware that wraps every
     * handler in a transaction (Messenger's doctrine_transaction) would nest them again, and a refused record
     * or a deadlock would then undo or split the chunk (README.md, "Exactly once").
     *
     * @param array<array<string, mixed>> $framework the framework extension's configs
     */
    public static function refuseTransactionalBuses(array $framework): void
    {
        foreach ($framework as $config) {
            foreach ((array) ($config['messenger']['buses'] ?? []) as $bus => $settings) {
                foreach ((array) ($settings['middleware'] ?? []) as $middleware) {
                    $id = \is_array($middleware) ? (string) ($middleware['id'] ?? array_key_first($middleware)) : (string) $middleware;
                    if (str_contains($id, 'doctrine_transaction')) {
                        throw new \LogicException("pimingest: the Messenger bus {$bus} wraps its handlers in a transaction ({$id}); the chunk handler must run outside one, because Pimcore's save() owns its transaction. Remove the middleware, or route ApplyChunk to a bus without it.");
                    }
                }
            }
        }
    }

    /** @param array<array<string, mixed>> $configs */
    public function load(array $configs, ContainerBuilder $container): void
    {
        self::refuseTransactionalBuses($container->getExtensionConfig('framework'));
        $config = $this->processConfiguration(new Configuration(), $configs);
        $db = new Reference('database_connection');

        $container->register(Ledger::class, Ledger::class)->setArguments([$db]);
        $container->register(TableApplier::class, TableApplier::class)->setArguments([$db]);
        $container->register(ApplierRegistry::class, ApplierRegistry::class)->setArguments([
            $config['appliers'],
            $config['default_applier'],
            new ServiceLocatorArgument(new TaggedIteratorArgument('pimingest.applier', 'key', null, true)),
            new Reference(TableApplier::class),
            new Reference('pimcore.model.factory', ContainerBuilder::IGNORE_ON_INVALID_REFERENCE),
        ]);
        $container->register(CheckAppliersOnStart::class, CheckAppliersOnStart::class)
            ->setArguments([new Reference(ApplierRegistry::class)])
            ->addTag('kernel.event_subscriber');
        $container->register(AckSender::class, AckSender::class)->setArguments([
            new Reference('http_client'),
            $config['callback_url'],
            $config['secret'],
            new Reference('logger'),
            $config['ack']['attempts'],
            $config['ack']['backoff'],
            $config['ack']['timeout'],
        ]);
        $container->register(ApplyChunkHandler::class, ApplyChunkHandler::class)
            ->setArguments([new Reference(Ledger::class), new Reference(ApplierRegistry::class), new Reference(AckSender::class), new Reference('logger')])
            ->addTag('messenger.message_handler');
        $container->register(IngestController::class, IngestController::class)
            ->setArguments([new Reference(Ledger::class), new Reference('messenger.default_bus'), new Reference(AckSender::class), $config['secret'], new Reference('logger'), $config['window']])
            ->setPublic(true)
            ->addTag('controller.service_arguments');
        $container->register(RouteLoader::class, RouteLoader::class)
            ->setArguments([$config['route_prefix']])
            ->addTag('routing.loader');
        $container->register(SetupCommand::class, SetupCommand::class)
            ->setArguments([new Reference(Ledger::class), [new Reference('messenger.transport.' . $config['transport'], ContainerBuilder::IGNORE_ON_INVALID_REFERENCE)]])
            ->addTag('console.command', ['command' => 'pimingest:setup']);
        $container->register(TransportGuard::class, TransportGuard::class)
            ->setArguments([$config['transport'], new Reference('messenger.transport.' . $config['transport'], ContainerBuilder::NULL_ON_INVALID_REFERENCE), $db])
            ->setPublic(true);
        $container->register(StatusCommand::class, StatusCommand::class)
            ->setArguments([new Reference(Ledger::class)])
            ->addTag('console.command', ['command' => 'pimingest:status']);
    }
}
