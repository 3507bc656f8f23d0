"""What the composition root (app.py) puts into the aiohttp application for the views."""

from __future__ import annotations

from aiohttp import web

from ..config import Config
from ..core.scheduler import Scheduler
from ..intake.lifecycle import Inbox
from ..intake.remote_watch import RemoteInboxes
from ..retention import Retention
from ..state import StateStore

CONFIG = web.AppKey("config", Config)
STORE = web.AppKey("store", StateStore)
SCHEDULER = web.AppKey("scheduler", Scheduler)
INBOX = web.AppKey("inbox", Inbox)
REMOTE_INBOXES = web.AppKey("remote_inboxes", RemoteInboxes)
RETENTION = web.AppKey("retention", Retention)
