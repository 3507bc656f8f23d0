<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Tests\Unit;

use PHPUnit\Framework\Attributes\DataProvider;
use PHPUnit\Framework\TestCase;
use Pimingestd\PimcoreBundle\Tests\Application\src\Kernel;

/**
 * The test application boots with the pimingest transport on doctrine://default and refuses to boot, with a
 * message that says what the transport must be, on any other broker (as Pimcore 2026 sets for its own
 * transports) or on a Doctrine transport over another connection than the ledger's.
 */
final class TransportGuardTest extends TestCase
{
    /** @var array<string, mixed> */
    private array $saved = [];

    private string $var = '';

    protected function setUp(): void
    {
        $this->var = sys_get_temp_dir() . '/pimingest-guard-' . getmypid();
        $file = tempnam(sys_get_temp_dir(), 'pimingest-guard') . '.sqlite';
        $this->env([
            'DATABASE_URL' => "sqlite:///{$file}",
            'PIMINGEST_APP_VAR' => $this->var,
            'PIMINGEST_CALLBACK_URL' => 'http://127.0.0.1:9/callbacks/ack',
            'PIMINGEST_SECRET' => '',
        ]);
    }

    protected function tearDown(): void
    {
        (new \Symfony\Component\Filesystem\Filesystem())->remove($this->var);
        foreach ($this->saved as $name => $value) {
            if ($value === null) {
                unset($_SERVER[$name], $_ENV[$name]);
            } else {
                $_SERVER[$name] = $_ENV[$name] = $value;
            }
        }
    }

    /** @param array<string, string> $vars */
    private function env(array $vars): void
    {
        foreach ($vars as $name => $value) {
            if (!\array_key_exists($name, $this->saved)) {
                $this->saved[$name] = $_SERVER[$name] ?? null;
            }
            $_SERVER[$name] = $_ENV[$name] = $value;
        }
    }

    private function boot(string $dsn): ?\LogicException
    {
        $this->env(['PIMINGEST_TRANSPORT_DSN' => $dsn]);
        $kernel = new Kernel('prod', false);
        try {
            $kernel->boot();
        } catch (\LogicException $e) {
            return $e;
        } finally {
            $kernel->shutdown();
        }

        return null;
    }

    public function testTheBundleBootsOnADoctrineTransportOnTheLedgersConnection(): void
    {
        self::assertNull($this->boot('doctrine://default?queue_name=pimingest'));
    }

    /** @return array<string, array{string, string}> */
    public static function refused(): array
    {
        return [
            'another broker' => ['in-memory://', 'is a Symfony\Component\Messenger\Transport\InMemory'],
            'synchronous' => ['sync://', 'is a Symfony\Component\Messenger\Transport\Sync\SyncTransport'],
            'another connection' => ['doctrine://other?queue_name=pimingest', 'on another DBAL connection than the ledger'],
        ];
    }

    /**
     * @dataProvider refused
     */
    #[DataProvider('refused')]
    public function testTheBundleRefusesToBootOnAnyOtherTransport(string $dsn, string $what): void
    {
        $e = $this->boot($dsn);
        self::assertNotNull($e, "booted with PIMINGEST_TRANSPORT_DSN={$dsn}");
        self::assertStringContainsString("the Messenger transport 'pimingest'", $e->getMessage());
        self::assertStringContainsString($what, $e->getMessage());
        self::assertStringContainsString('doctrine://default', $e->getMessage());
    }
}
