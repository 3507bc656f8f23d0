<?php

declare(strict_types=1);

namespace Pimcore\Model\Element;

/** Stand-in for Pimcore\Model\Element\AbstractElement (tests only): the type generated relation setters take. */
abstract class AbstractElement extends \Pimcore\Model\AbstractModel implements ElementInterface
{
}
