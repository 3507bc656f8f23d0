<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Tests\Unit;

/** What a SIGKILL leaves: nothing after it runs (the handler's finally blocks stand for the closed connection). */
final class Killed extends \Error
{
}
