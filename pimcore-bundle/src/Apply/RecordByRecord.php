<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Apply;

/**
 * An applier whose records are saved by code that owns its transactions (Pimcore's `save()` and
 * `delete()` begin and commit their own, with their own deadlock retry). The worker holds no transaction
 * around apply(): it records each record's outcome right after it (Chunk::each() with a Progress) and a
 * redelivered chunk resumes at the first record without one. The data_object applier is one.
 */
interface RecordByRecord extends ApplierInterface
{
}
