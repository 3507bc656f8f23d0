<?php

declare(strict_types=1);

namespace Pimcore\Model\Element;

/**
 * Stand-in for Pimcore\Model\Element\ValidationException (models/Element/ValidationException.php at
 * v11.4.1; tests only): sub-items, a context stack, and getAggregatedMessage(), which appends the first
 * context as `[ ctx ]` (so a localized field's refusal reads `Empty mandatory field [ name ][ localizedfields-de ]`).
 */
class ValidationException extends \Exception
{
    /** @var list<string> */
    protected array $contextStack = [];
    /** @var list<\Exception> */
    protected array $subItems = [];

    /** @return list<\Exception> */
    public function getSubItems(): array
    {
        return $this->subItems;
    }

    /** @param list<\Exception> $subItems */
    public function setSubItems(array $subItems = []): void
    {
        $this->subItems = $subItems;
    }

    public function addContext(string $context): void
    {
        $this->contextStack[] = $context;
    }

    /** @return list<string> */
    public function getContextStack(): array
    {
        return $this->contextStack;
    }

    public function getAggregatedMessage(): string
    {
        $msg = $this->getMessage();
        if ($this->contextStack !== []) {
            $msg .= '[ ' . $this->contextStack[0] . ' ]';
        }
        if ($this->subItems !== []) {
            $parts = [];
            foreach ($this->subItems as $item) {
                if ($item instanceof self) {
                    $part = $item->getAggregatedMessage();
                    if ($item->getContextStack() !== []) {
                        $part .= '[ ' . $item->getContextStack()[0] . ' ]';
                    }
                } else {
                    $part = $item->getMessage();
                }
                $parts[] = $part;
            }
            $msg .= ' (' . implode(', ', $parts) . ')';
        }

        return $msg;
    }
}
