<?php

declare(strict_types=1);

namespace Carbon;

/**
 * Stand-in for nesbot/carbon's Carbon\Carbon (tests only; loaded only when the real one is not installed,
 * see tests/bootstrap.php): a mutable DateTime, which is all a generated date setter's type declaration
 * (`?\Carbon\Carbon`) needs. parse() and instance() as in Carbon.
 */
class Carbon extends \DateTime
{
    public function __construct(\DateTimeInterface|string|int|float|null $time = null, \DateTimeZone|string|int|null $timezone = null)
    {
        if ($time instanceof \DateTimeInterface) {
            $time = $time->format('Y-m-d H:i:s.u');
        } elseif (\is_int($time) || \is_float($time)) {
            $time = '@' . $time;
        }
        parent::__construct($time ?? 'now', \is_string($timezone) ? new \DateTimeZone($timezone) : (\is_int($timezone) ? null : $timezone));
    }

    public static function parse(\DateTimeInterface|string|null $time = null, \DateTimeZone|string|null $tz = null): static
    {
        return new static($time, $tz);
    }

    public static function instance(\DateTimeInterface $date): static
    {
        return new static($date->format('Y-m-d H:i:s.u'), $date->getTimezone());
    }
}
