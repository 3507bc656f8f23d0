<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Tests\Unit;

use Doctrine\DBAL\Driver;
use Doctrine\DBAL\Driver\Connection as DriverConnection;
use Doctrine\DBAL\Driver\Middleware;
use Doctrine\DBAL\Driver\Middleware\AbstractConnectionMiddleware;
use Doctrine\DBAL\Driver\Middleware\AbstractDriverMiddleware;
use Doctrine\DBAL\Driver\Statement;

/**
 * A DBAL middleware that runs a test's hook once, right before the connection asks for a named lock
 * (GET_LOCK): the moment between a worker reading its chunk and claiming it, where another worker may finish
 * the same chunk.
 */
final class BeforeGetLock implements Middleware
{
    /** @var (\Closure(): void)|null */
    public static ?\Closure $hook = null;

    public function wrap(Driver $driver): Driver
    {
        return new class ($driver) extends AbstractDriverMiddleware {
            public function connect(array $params): DriverConnection
            {
                return new class (parent::connect($params)) extends AbstractConnectionMiddleware {
                    public function prepare(string $sql): Statement
                    {
                        if (str_contains($sql, 'GET_LOCK') && BeforeGetLock::$hook !== null) {
                            $hook = BeforeGetLock::$hook;
                            BeforeGetLock::$hook = null;
                            $hook();
                        }

                        return parent::prepare($sql);
                    }
                };
            }
        };
    }
}
