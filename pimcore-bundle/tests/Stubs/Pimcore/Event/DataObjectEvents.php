<?php

declare(strict_types=1);

namespace Pimcore\Event;

/** Stand-in for Pimcore\Event\DataObjectEvents (lib/Event/DataObjectEvents.php at v11.4.1; tests only): the same names. */
final class DataObjectEvents
{
    public const PRE_ADD = 'pimcore.dataobject.preAdd';
    public const POST_ADD = 'pimcore.dataobject.postAdd';
    public const POST_ADD_FAILURE = 'pimcore.dataobject.postAddFailure';
    public const PRE_UPDATE = 'pimcore.dataobject.preUpdate';
    public const PRE_UPDATE_VALIDATION_EXCEPTION = 'pimcore.dataobject.preUpdateValidationException';
    public const POST_UPDATE = 'pimcore.dataobject.postUpdate';
    public const POST_UPDATE_FAILURE = 'pimcore.dataobject.postUpdateFailure';
    public const PRE_DELETE = 'pimcore.dataobject.preDelete';
    public const POST_DELETE = 'pimcore.dataobject.postDelete';
    public const POST_DELETE_FAILURE = 'pimcore.dataobject.postDeleteFailure';
    public const POST_LOAD = 'pimcore.dataobject.postLoad';
}
