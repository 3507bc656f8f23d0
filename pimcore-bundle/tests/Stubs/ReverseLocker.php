<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Tests\Stubs;

/**
 * A real deadlock for a test: a second MariaDB connection, in a child process (bin/lock-in-reverse.php),
 * that locks rows in the reverse order of the code under test. start() returns once the child holds its
 * first locks; the code under test then runs and blocks on them; the child sees it waiting, asks for a
 * row the code under test holds, and InnoDB breaks the cycle by rolling back one of the two (the one with
 * fewer changes: the child writes `ballast` rows to make sure that is the code under test).
 */
final class ReverseLocker
{
    /** @var resource */
    private $process;
    /** @var array<int, resource> */
    private array $pipes = [];

    /** @param list<string> $first statements run first, holding their locks */
    public static function start(string $url, array $first, string $second, int $ballast = 200): self
    {
        $locker = new self();
        $command = [\PHP_BINARY, __DIR__ . '/bin/lock-in-reverse.php', $url, json_encode(['first' => $first, 'second' => $second, 'ballast' => $ballast], \JSON_THROW_ON_ERROR)];
        $process = proc_open($command, [1 => ['pipe', 'w'], 2 => ['pipe', 'w']], $locker->pipes);
        if (!\is_resource($process)) {
            throw new \RuntimeException('could not start the second connection');
        }
        $locker->process = $process;
        $line = fgets($locker->pipes[1]);
        if ($line !== "locked\n") {
            throw new \RuntimeException('the second connection did not take its locks: ' . $line . stream_get_contents($locker->pipes[2]));
        }

        return $locker;
    }

    /** Waits for the child: "committed" (the code under test was the victim) or "victim". */
    public function finish(): string
    {
        $out = trim((string) stream_get_contents($this->pipes[1]));
        $err = trim((string) stream_get_contents($this->pipes[2]));
        fclose($this->pipes[1]);
        fclose($this->pipes[2]);
        $code = proc_close($this->process);
        if ($code !== 0) {
            throw new \RuntimeException("the second connection failed ({$code}): {$out} {$err}");
        }

        return $out;
    }
}
