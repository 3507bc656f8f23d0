<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\DependencyInjection;

use Symfony\Component\Config\Definition\Builder\TreeBuilder;
use Symfony\Component\Config\Definition\ConfigurationInterface;

/** `config/packages/pimingest.yaml`: every key, with its default (README.md lists them). */
final class Configuration implements ConfigurationInterface
{
    public function getConfigTreeBuilder(): TreeBuilder
    {
        $tree = new TreeBuilder('pimingest');
        $tree->getRootNode()
            ->children()
                ->scalarNode('route_prefix')->defaultValue('/pimingest')->end()
                ->scalarNode('secret')->defaultValue('')->info('the shared HMAC secret; empty: signatures are not checked')->end()
                ->scalarNode('callback_url')->isRequired()->cannotBeEmpty()
                    ->info("the daemon's /callbacks/ack: the only URL ACKs go to")->end()
                ->scalarNode('transport')->defaultValue('pimingest')->info('the Messenger transport chunks are queued on')->end()
                ->integerNode('window')->defaultValue(4)->min(1)->max(256)
                    ->info('protocol v2: the chunks in flight this PIM-Core announces (its worker count, or twice that)')->end()
                ->scalarNode('default_applier')->defaultValue('table')->end()
                ->arrayNode('appliers')
                    ->info('by file name (the Pimingest-File-Name header), first match wins')
                    ->arrayPrototype()
                        ->children()
                            ->scalarNode('match')->isRequired()->end()
                            ->scalarNode('applier')->isRequired()->end()
                            ->variableNode('options')->defaultValue([])->end()
                        ->end()
                    ->end()
                ->end()
                ->arrayNode('ack')->addDefaultsIfNotSet()
                    ->children()
                        ->integerNode('attempts')->defaultValue(6)->min(1)->end()
                        ->floatNode('backoff')->defaultValue(0.5)->min(0)->end()
                        ->floatNode('timeout')->defaultValue(10.0)->min(0.1)->end()
                    ->end()
                ->end()
            ->end();

        return $tree;
    }
}
