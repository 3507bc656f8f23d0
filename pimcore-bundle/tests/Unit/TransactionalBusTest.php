<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Tests\Unit;

use PHPUnit\Framework\TestCase;
use Pimingestd\PimcoreBundle\DependencyInjection\PimingestdPimcoreExtension;

/**
 * A Messenger bus that wraps its handlers in a transaction (doctrine_transaction) would nest Pimcore's save
 * transactions inside one again: the bundle refuses to boot with it, naming the bus (README.md, "Exactly
 * once"). Pimcore's own buses (their middleware as Pimcore 11 configures them) are fine.
 */
final class TransactionalBusTest extends TestCase
{
    public function testABusWrappingHandlersInATransactionIsRefusedAtBoot(): void
    {
        foreach ([['doctrine_transaction'], [['doctrine_transaction' => ['default']]], [['id' => 'doctrine_transaction']]] as $middleware) {
            try {
                PimingestdPimcoreExtension::refuseTransactionalBuses([
                    ['messenger' => ['buses' => ['messenger.bus.pimcore-core' => ['middleware' => ['validation']]]]],
                    ['messenger' => ['buses' => ['command.bus' => ['middleware' => $middleware]]]],
                ]);
                self::fail('a transactional bus was accepted: ' . json_encode($middleware, \JSON_THROW_ON_ERROR));
            } catch (\LogicException $e) {
                self::assertStringContainsString('the Messenger bus command.bus wraps its handlers in a transaction', $e->getMessage());
            }
        }
    }

    public function testPimcoresOwnBusesAreAccepted(): void
    {
        PimingestdPimcoreExtension::refuseTransactionalBuses([
            ['messenger' => ['default_bus' => 'messenger.bus.pimcore-core', 'buses' => ['messenger.bus.pimcore-core' => null]]],
            ['messenger' => ['buses' => ['generic.execution.engine.bus' => ['middleware' => [
                'Pimcore\Messenger\Middleware\CollectGarbageMiddleware',
                'Pimcore\Bundle\GenericExecutionEngineBundle\Messenger\Middleware\StepConditionMiddleware',
            ]]]]],
            ['secret' => 'x'],
        ]);
        $this->addToAssertionCount(1);
    }
}
