<?php

declare(strict_types=1);

namespace Pimcore\Model\Listing;

use Pimcore\Model\AbstractModel;

/**
 * Stand-in for Pimcore\Model\Listing\AbstractListing (tests only): a raw SQL condition with `?`
 * placeholders, order, limit and offset, iterable and countable. The condition is run verbatim by
 * MariaDB, so it compares with the table's collation.
 *
 * @implements \Iterator<int, mixed>
 */
abstract class AbstractListing extends AbstractModel implements \Iterator, \Countable
{
    protected string $condition = '';
    /** @var list<mixed> */
    protected array $conditionVariables = [];
    protected ?int $limit = null;
    protected int $offset = 0;
    /** @var list<string> */
    protected array $order = [];
    /** @var list<string> */
    protected array $orderKey = [];
    /** @var list<mixed>|null */
    protected ?array $data = null;
    private int $position = 0;

    /** @return list<mixed> */
    abstract public function load(): array;

    abstract public function getTotalCount(): int;

    public function setCondition(string $condition, mixed $conditionVariables = null): static
    {
        $this->condition = $condition;
        $this->conditionVariables = $conditionVariables === null ? [] : array_values((array) $conditionVariables);
        $this->data = null;

        return $this;
    }

    public function addConditionParam(string $key, mixed $value = null, string $concatenator = 'AND'): static
    {
        $this->condition = $this->condition === '' ? "({$key})" : "{$this->condition} {$concatenator} ({$key})";
        if ($value !== null) {
            array_push($this->conditionVariables, ...array_values((array) $value));
        }
        $this->data = null;

        return $this;
    }

    public function getCondition(): string
    {
        return $this->condition;
    }

    /** @return list<mixed> */
    public function getConditionVariables(): array
    {
        return $this->conditionVariables;
    }

    public function setLimit(?int $limit): static
    {
        $this->limit = $limit !== null && $limit > 0 ? $limit : null;
        $this->data = null;

        return $this;
    }

    public function getLimit(): ?int
    {
        return $this->limit;
    }

    public function setOffset(int $offset): static
    {
        $this->offset = max(0, $offset);
        $this->data = null;

        return $this;
    }

    public function setOrderKey(string|array $orderKey, bool $quote = true): static
    {
        $this->orderKey = array_map(static fn (string $k): string => $quote ? '`' . str_replace('`', '', $k) . '`' : $k, (array) $orderKey);
        $this->data = null;

        return $this;
    }

    public function setOrder(string|array $order): static
    {
        $this->order = array_map(static fn (string $o): string => strtoupper($o) === 'DESC' ? 'DESC' : 'ASC', (array) $order);
        $this->data = null;

        return $this;
    }

    protected function orderAndLimit(): string
    {
        $sql = '';
        if ($this->orderKey !== []) {
            $parts = [];
            foreach ($this->orderKey as $i => $key) {
                $parts[] = $key . ' ' . ($this->order[$i] ?? $this->order[0] ?? 'ASC');
            }
            $sql .= ' ORDER BY ' . implode(', ', $parts);
        }
        if ($this->limit !== null) {
            $sql .= " LIMIT {$this->limit} OFFSET {$this->offset}";
        }

        return $sql;
    }

    /** @return list<mixed> */
    public function getData(): array
    {
        return $this->data ??= $this->load();
    }

    /** @param list<mixed>|null $data */
    public function setData(?array $data): static
    {
        $this->data = $data;

        return $this;
    }

    public function count(): int
    {
        return \count($this->getData());
    }

    public function current(): mixed
    {
        return $this->getData()[$this->position] ?? null;
    }

    public function key(): int
    {
        return $this->position;
    }

    public function next(): void
    {
        ++$this->position;
    }

    public function rewind(): void
    {
        $this->position = 0;
    }

    public function valid(): bool
    {
        return $this->position < \count($this->getData());
    }
}
