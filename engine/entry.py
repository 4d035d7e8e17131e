"""What a `confab` verb does first: its settings from the environment and its flags, the logging
that only an entry point configures, and the event that Ctrl-C or SIGTERM sets (shared by
bots/cli.py, worker_cli.py, kb_cli.py)."""
from __future__ import annotations

import asyncio
import logging
import signal
import sys

from engine.config import ConfigError, Settings


def settings_from(args) -> Settings:
    try:
        return Settings.from_env(host=getattr(args, "host", None), port=getattr(args, "port", None),
                                 data_dir=getattr(args, "data_dir", None),
                                 queue_url=getattr(args, "queue", None))
    except ConfigError as e:
        sys.exit(f"confab: {e}")


def configure_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM, for a verb that runs until it is stopped."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except NotImplementedError:
            pass
    return stop
