<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Tests\Application\src;

use Doctrine\DBAL\Connection;
use Doctrine\Persistence\ConnectionRegistry;

/**
 * The app's connections, as DoctrineBundle's registry would offer them to the Doctrine transport: `default`
 * (database_connection, the ledger's) and `other`, a second connection to the same database, as a project
 * with two DBAL connections has (a transport on it cannot share the ledger's transaction).
 */
final class DbalRegistry implements ConnectionRegistry
{
    private ?Connection $other = null;

    public function __construct(private readonly Connection $connection)
    {
    }

    public function getDefaultConnectionName(): string
    {
        return 'default';
    }

    public function getConnection(?string $name = null): object
    {
        if ($name === 'other') {
            return $this->other ??= \Doctrine\DBAL\DriverManager::getConnection($this->connection->getParams());
        }
        if ($name !== null && $name !== 'default') {
            throw new \InvalidArgumentException("no connection {$name}");
        }

        return $this->connection;
    }

    /** @return array<string, object> */
    public function getConnections(): array
    {
        return ['default' => $this->connection, 'other' => $this->getConnection('other')];
    }

    /** @return array<string, string> */
    public function getConnectionNames(): array
    {
        return ['default' => 'database_connection', 'other' => 'test.other_connection'];
    }
}
