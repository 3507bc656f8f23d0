<?php

declare(strict_types=1);

namespace Pimcore\Model\Element;

/** Stand-in for Pimcore 11's ValidationException (tests only). */
class ValidationException extends \Exception
{
    /** @var list<\Throwable> */
    private array $subItems = [];

    /** @return list<\Throwable> */
    public function getSubItems(): array
    {
        return $this->subItems;
    }

    /** @param list<\Throwable> $subItems */
    public function setSubItems(array $subItems = []): void
    {
        $this->subItems = $subItems;
    }
}
