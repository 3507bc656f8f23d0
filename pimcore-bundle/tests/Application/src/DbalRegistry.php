<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Tests\Application\src;

use Doctrine\DBAL\Connection;
use Doctrine\Persistence\ConnectionRegistry;

/** The one connection, as DoctrineBundle's registry would offer it to the Doctrine transport. */
final class DbalRegistry implements ConnectionRegistry
{
    public function __construct(private readonly Connection $connection)
    {
    }

    public function getDefaultConnectionName(): string
    {
        return 'default';
    }

    public function getConnection(?string $name = null): object
    {
        if ($name !== null && $name !== 'default') {
            throw new \InvalidArgumentException("no connection {$name}");
        }

        return $this->connection;
    }

    /** @return array<string, object> */
    public function getConnections(): array
    {
        return ['default' => $this->connection];
    }

    /** @return array<string, string> */
    public function getConnectionNames(): array
    {
        return ['default' => 'database_connection'];
    }
}
