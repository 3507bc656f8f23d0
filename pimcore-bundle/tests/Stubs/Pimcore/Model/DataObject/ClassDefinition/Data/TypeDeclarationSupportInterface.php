<?php

declare(strict_types=1);

namespace Pimcore\Model\DataObject\ClassDefinition\Data;

/** Stand-in for the interface whose declarations Pimcore writes into the generated getters and setters (Data.php:553-562). */
interface TypeDeclarationSupportInterface
{
    public function getParameterTypeDeclaration(): ?string;

    public function getReturnTypeDeclaration(): ?string;

    public function getPhpdocInputType(): ?string;

    public function getPhpdocReturnType(): ?string;
}
