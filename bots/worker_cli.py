"""`confab worker` (a GPU host taking jobs from the Redis queue), `--queue` for run and serve,
and `confab db` (the store's schema: status and upgrade, SQLite or PostgreSQL)."""
from __future__ import annotations

import asyncio
import logging
import sys

from engine.config import ConfigError, Settings
from engine.entry import configure_logging, stop_on_signals
from engine.scaleout.hosts import run_worker
from engine.storage.migrations import status, upgrade

log = logging.getLogger("confab")

QUEUE_HELP = ("the Redis queue, redis://HOST:6379/0 (CONFAB_QUEUE_URL): jobs run on `confab worker` "
              "hosts instead of in this process")


def register_cli(sub, common) -> None:
    for verb in ("run", "serve"):
        if verb in sub.choices:
            sub.choices[verb].add_argument("--queue", help=QUEUE_HELP)
    p = common(sub.add_parser("worker", help="run jobs from the Redis queue on this host's models"))
    p.add_argument("--queue", help="the Redis queue to take jobs from (CONFAB_QUEUE_URL)")
    p.add_argument("--name", help="this worker's name in the queue (default: host-pid)")
    p.set_defaults(func=cmd_worker)
    db = sub.add_parser("db", help="the store's schema: status and upgrade")
    dsub = db.add_subparsers(dest="db_command", required=True)
    common(dsub.add_parser("status", help="the schema version and pending migrations")).set_defaults(func=cmd_db_status)
    common(dsub.add_parser("upgrade", help="apply pending migrations")).set_defaults(func=cmd_db_upgrade)


def _settings(args):
    try:
        return Settings.from_env(data_dir=getattr(args, "data_dir", None),
                                 queue_url=getattr(args, "queue", None))
    except ConfigError as e:
        sys.exit(f"confab: {e}")


def cmd_worker(args) -> None:
    settings = _settings(args)
    configure_logging(settings.log_level)
    try:
        asyncio.run(_worker(settings, args.name))
    except ConnectionError as e:
        sys.exit(f"confab: cannot reach the queue at {settings.queue_url}: {e}")


async def _worker(settings, name: str | None, **engine_kw) -> None:
    stop = stop_on_signals()
    try:
        await run_worker(settings, stop, name, **engine_kw)
    except ConfigError as e:
        sys.exit(f"confab: {e}")


def cmd_db_status(args) -> None:
    settings = _settings(args)
    current, pending = status(settings)
    print(f"schema version {current}; " + (f"pending: {', '.join(map(str, pending))}" if pending
                                            else "up to date"))


def cmd_db_upgrade(args) -> None:
    settings = _settings(args)
    before, after = upgrade(settings)
    print(f"schema version {before} -> {after}" if after != before else f"schema version {after}: up to date")
