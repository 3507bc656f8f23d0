<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Tests\Unit;

/** The driver error behind a DeadlockException the save throws itself (a deadlock that never goes away). */
final class FakeDriverError extends \Exception implements \Doctrine\DBAL\Driver\Exception
{
    public function getSQLState(): ?string
    {
        return '40001';
    }
}
