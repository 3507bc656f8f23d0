<?php

declare(strict_types=1);

namespace Pimcore\Model\DataObject;

/** Stand-in for a DataObject folder (tests only). */
final class Folder
{
    public function __construct(public readonly string $path)
    {
    }
}
