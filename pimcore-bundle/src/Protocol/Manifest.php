<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Protocol;

/**
 * The completion's manifest: SHA-256 over the chunk checksums joined by "\n", in chunk order.
 */
final class Manifest
{
    /** @param iterable<string> $checksums */
    public static function of(iterable $checksums): string
    {
        $ctx = hash_init('sha256');
        $first = true;
        foreach ($checksums as $checksum) {
            hash_update($ctx, ($first ? '' : "\n") . $checksum);
            $first = false;
        }

        return 'sha256:' . hash_final($ctx);
    }
}
