<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\DependencyInjection;

use Doctrine\DBAL\Connection;
use Symfony\Component\Messenger\Bridge\Doctrine\Transport\Connection as DoctrineTransportConnection;
use Symfony\Component\Messenger\Bridge\Doctrine\Transport\DoctrineTransport;

/**
 * The bundle refuses to boot unless its Messenger transport is a Doctrine transport on the ledger's own
 * connection: the controller queues a chunk in the transaction that takes it, and only the same connection
 * makes that one transaction. Pimcore 2026 points its own transports at RabbitMQ
 * (PIMCORE_MESSENGER_TRANSPORT_DSN_PREFIX); this one must stay `doctrine://default`.
 *
 * The transport's DSN is an environment variable, resolved at run time, so the check runs when the kernel
 * boots (PimingestdPimcoreBundle::boot()), on the transport Messenger really built. Which DBAL connection a
 * Doctrine transport holds is not public API: it is read from the properties Symfony's Doctrine bridge has
 * kept from 5.4 to 7.4 (DoctrineTransport::$connection, its Connection::$driverConnection).
 */
final class TransportGuard
{
    public function __construct(
        private readonly string $name,
        private readonly ?object $transport,
        private readonly Connection $ledger,
    ) {
    }

    /** @throws \LogicException naming the transport, what it is, and what it must be */
    public function check(): void
    {
        $must = "it must be a Doctrine transport on the connection the ledger uses (doctrine://default, the default"
            . " of PIMINGEST_TRANSPORT_DSN), so that a chunk is queued in the transaction that takes it; keep"
            . " framework.messenger.transports.{$this->name} on doctrine:// even where Pimcore's own transports use"
            . ' another broker (PIMCORE_MESSENGER_TRANSPORT_DSN_PREFIX)';
        if ($this->transport === null) {
            throw new \LogicException("pimingest: there is no Messenger transport named '{$this->name}' (pimingest.transport); {$must}");
        }
        if (!$this->transport instanceof DoctrineTransport) {
            throw new \LogicException("pimingest: the Messenger transport '{$this->name}' is a " . $this->transport::class . "; {$must}");
        }
        $queue = (new \ReflectionProperty(DoctrineTransport::class, 'connection'))->getValue($this->transport);
        $dbal = $queue instanceof DoctrineTransportConnection
            ? (new \ReflectionProperty(DoctrineTransportConnection::class, 'driverConnection'))->getValue($queue)
            : null;
        if ($dbal !== $this->ledger) {
            throw new \LogicException("pimingest: the Messenger transport '{$this->name}' is a Doctrine transport on another DBAL connection than the ledger's (database_connection); {$must}");
        }
    }
}
