<?php

declare(strict_types=1);

namespace Pimcore\Model\Element;

/** Stand-in for Pimcore\Model\Element\ElementInterface (tests only), with the methods the stand-ins implement. */
interface ElementInterface
{
    public function getId(): ?int;

    public function getKey(): ?string;

    public function getType(): string;

    public function getFullPath(): string;

    public function getRealFullPath(): string;

    public function save(array $parameters = []): static;

    public function delete(): void;
}
