<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Apply;

use Psr\Container\ContainerInterface;

/**
 * Which applier takes a chunk: the first configured rule whose `match` (a glob on the file name from
 * the Pimingest-File-Name header) fits; the default applier when none does or the header is absent.
 */
final class ApplierRegistry
{
    /** @var array<string, ApplierInterface> */
    private array $built = [];

    /**
     * @param list<array{match: string, applier: string, options?: array<string, mixed>}> $rules
     */
    public function __construct(
        private readonly array $rules,
        private readonly string $default,
        private readonly ContainerInterface $custom,
        private readonly TableApplier $table,
    ) {
    }

    public function for(?string $fileName): ApplierInterface
    {
        foreach ($this->rules as $i => $rule) {
            if ($fileName !== null && fnmatch($rule['match'], $fileName, \FNM_NOESCAPE)) {
                return $this->build("rule{$i}", $rule['applier'], $rule['options'] ?? []);
            }
        }

        return $this->build('default', $this->default, []);
    }

    /** @param array<string, mixed> $options */
    private function build(string $slot, string $name, array $options): ApplierInterface
    {
        if (isset($this->built[$slot])) {
            return $this->built[$slot];
        }

        return $this->built[$slot] = match ($name) {
            'table' => $this->table,
            'data_object' => new DataObjectApplier($options),
            default => $this->custom->has($name)
                ? $this->custom->get($name)
                : throw new \InvalidArgumentException("no applier named {$name} (table, data_object, or a service tagged pimingest.applier)"),
        };
    }
}
