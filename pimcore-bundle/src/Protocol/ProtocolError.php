<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Protocol;

/**
 * A refusal the protocol defines: the HTTP status and the JSON body to answer with.
 */
final class ProtocolError extends \RuntimeException
{
    /** @param array<string, mixed> $extra */
    public function __construct(
        public readonly int $status,
        public readonly string $error,
        public readonly string $detail = '',
        public readonly array $extra = [],
    ) {
        parent::__construct($detail !== '' ? "{$error}: {$detail}" : $error);
    }

    /** @return array<string, mixed> */
    public function body(): array
    {
        return ['error' => $this->error] + ($this->detail !== '' ? ['detail' => $this->detail] : []) + $this->extra;
    }
}
