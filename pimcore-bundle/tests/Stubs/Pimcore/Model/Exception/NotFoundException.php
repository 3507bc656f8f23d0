<?php

declare(strict_types=1);

namespace Pimcore\Model\Exception;

/** Stand-in for Pimcore\Model\Exception\NotFoundException (tests only). */
class NotFoundException extends \Exception
{
}
