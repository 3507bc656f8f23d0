<?php

declare(strict_types=1);

namespace Pimcore\Model\Element;

/**
 * Stand-in for Pimcore\Model\Element\DuplicateFullPathException (tests only): thrown by save() before its
 * transaction when another element already has the path and key (AbstractObject::correctPath(),
 * AbstractObject.php:665-672).
 */
class DuplicateFullPathException extends \Exception
{
    private ?ElementInterface $duplicateElement = null;
    private ?ElementInterface $causeElement = null;

    public function setDuplicateElement(?ElementInterface $duplicateElement): void
    {
        $this->duplicateElement = $duplicateElement;
    }

    public function getDuplicateElement(): ?ElementInterface
    {
        return $this->duplicateElement;
    }

    public function setCauseElement(?ElementInterface $causeElement): void
    {
        $this->causeElement = $causeElement;
    }

    public function getCauseElement(): ?ElementInterface
    {
        return $this->causeElement;
    }
}
