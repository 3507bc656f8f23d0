<?php

declare(strict_types=1);

namespace Pimcore\Model\DataObject;

/**
 * Stand-in for a generated class's Listing (tests only): setCondition("`field` = ?", [value]),
 * setUnpublished, setLimit, load, over the stand-in store.
 */
abstract class StubListing
{
    private string $field = '';
    private mixed $value = null;
    private int $limit = 0;
    public bool $unpublished = false;

    abstract protected function of(): string;

    public function setCondition(string $condition, array $variables = []): static
    {
        preg_match('/`(\w+)` = \?/', $condition, $m);
        $this->field = $m[1] ?? '';
        $this->value = $variables[0] ?? null;

        return $this;
    }

    public function setUnpublished(bool $unpublished): static
    {
        $this->unpublished = $unpublished;

        return $this;
    }

    public function setLimit(int $limit): static
    {
        $this->limit = $limit;

        return $this;
    }

    /** @return list<Concrete> */
    public function load(): array
    {
        $found = array_values(array_filter(
            Concrete::$saved[$this->of()] ?? [],
            fn (Concrete $o): bool => ($this->unpublished || $o->published) && $o->get($this->field) === $this->value,
        ));

        return $this->limit > 0 ? \array_slice($found, 0, $this->limit) : $found;
    }
}
