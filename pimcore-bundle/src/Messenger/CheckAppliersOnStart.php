<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Messenger;

use Pimingestd\PimcoreBundle\Apply\ApplierRegistry;
use Symfony\Component\EventDispatcher\EventSubscriberInterface;
use Symfony\Component\Messenger\Event\WorkerStartedEvent;

/**
 * A worker checks the appliers' configuration as it starts (every class, field and type named): a misspelt
 * one stops the worker with the configuration key at once, instead of failing every chunk it takes.
 */
final class CheckAppliersOnStart implements EventSubscriberInterface
{
    public function __construct(private readonly ApplierRegistry $appliers)
    {
    }

    public static function getSubscribedEvents(): array
    {
        return [WorkerStartedEvent::class => 'check'];
    }

    public function check(): void
    {
        $this->appliers->check();
    }
}
