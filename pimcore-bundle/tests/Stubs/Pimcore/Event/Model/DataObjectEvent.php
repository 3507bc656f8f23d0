<?php

declare(strict_types=1);

namespace Pimcore\Event\Model;

use Pimcore\Model\DataObject\AbstractObject;
use Symfony\Contracts\EventDispatcher\Event;

/** Stand-in for Pimcore\Event\Model\DataObjectEvent (lib/Event/Model/DataObjectEvent.php at v11.4.1; tests only). */
class DataObjectEvent extends Event
{
    /** @param array<string, mixed> $arguments */
    public function __construct(protected AbstractObject $object, protected array $arguments = [])
    {
    }

    public function getObject(): AbstractObject
    {
        return $this->object;
    }

    public function setObject(AbstractObject $object): void
    {
        $this->object = $object;
    }

    public function getElement(): AbstractObject
    {
        return $this->object;
    }

    public function getArgument(string $key): mixed
    {
        if (!\array_key_exists($key, $this->arguments)) {
            throw new \InvalidArgumentException(sprintf('Argument "%s" not found.', $key));
        }

        return $this->arguments[$key];
    }

    public function setArgument(string $key, mixed $value): static
    {
        $this->arguments[$key] = $value;

        return $this;
    }

    /** @return array<string, mixed> */
    public function getArguments(): array
    {
        return $this->arguments;
    }

    /** @param array<string, mixed> $args */
    public function setArguments(array $args = []): static
    {
        $this->arguments = $args;

        return $this;
    }

    public function hasArgument(string $key): bool
    {
        return \array_key_exists($key, $this->arguments);
    }
}
