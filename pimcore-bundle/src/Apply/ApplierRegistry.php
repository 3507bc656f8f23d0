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
        private readonly ?object $models = null,
    ) {
    }

    /**
     * Build every configured applier now, so a misspelt class, field or type fails when the worker starts,
     * with the rule's place in the configuration, rather than at the first chunk.
     *
     * @throws \InvalidArgumentException naming `pimingest.appliers[i]` (or `default_applier`)
     */
    public function check(): void
    {
        foreach ($this->rules as $i => $rule) {
            try {
                $this->build("rule{$i}", $rule['applier'], $rule['options'] ?? []);
            } catch (\InvalidArgumentException $e) {
                throw new \InvalidArgumentException("pimingest.appliers[{$i}] ({$rule['match']}): {$e->getMessage()}", 0, $e);
            }
        }
        try {
            $this->build('default', $this->default, []);
        } catch (\InvalidArgumentException $e) {
            throw new \InvalidArgumentException("pimingest.default_applier: {$e->getMessage()}", 0, $e);
        }
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
            'data_object' => new DataObjectApplier($options, $this->models
                ?? throw new \InvalidArgumentException('the data_object applier needs Pimcore (its model factory, the service pimcore.model.factory)')),
            default => $this->custom->has($name)
                ? $this->custom->get($name)
                : throw new \InvalidArgumentException("no applier named {$name} (table, data_object, or a service tagged pimingest.applier)"),
        };
    }
}
