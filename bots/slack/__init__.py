"""Confab in Slack (slack-bolt, async): mentions, DMs, threads, slash commands and voice clips.

`start(engine, commands, app)` is the adapter's entry point (see bots/adapters.py): it returns
None when SLACK_BOT_TOKEN is unset; otherwise it checks the token with auth.test and connects by
Socket Mode (SLACK_APP_TOKEN set) or serves the signed HTTP Events API at /slack/events on
Confab's aiohttp app. slack_bolt is imported only when Slack is configured.
"""
from __future__ import annotations

import asyncio
import logging

from bots.adapters import door_modules
from bots.common.support import build_support_desk
from bots.slack.settings import SlackSettings

SETTINGS = SlackSettings        # read with the engine's, and given to `start`

log = logging.getLogger(__name__)


class RunningSlack:
    """What `start` returns: stop() disconnects and lets answers in flight finish briefly."""

    def __init__(self, adapter, connection, close_client, owned_desk=None):
        self.adapter, self.connection, self.close_client = adapter, connection, close_client
        self.owned_desk = owned_desk     # a support desk `start` opened, closed with the adapter

    async def stop(self) -> None:
        await self.connection.stop()
        await self.adapter.stop()
        await self.close_client(self.adapter.client)
        if self.owned_desk is not None:
            await asyncio.to_thread(self.owned_desk.close)


async def start(engine, commands, app=None, settings: SlackSettings | None = None, desk=None):
    """`settings`: Slack's own (none: Slack is not configured); `desk` defaults to the support
    desk of CONFAB_CHANNELS_FILE, when it names support channels."""
    settings = settings or SlackSettings()
    if not settings.slack_bot_token:
        return None
    connection, slack_adapter = door_modules("SLACK_BOT_TOKEN", "slack-bolt", "slack",
                                             "bots.slack.connection", "bots.slack.adapter")
    connection.check_settings(settings)
    client = connection.web_client(settings)
    try:
        identity = await connection.who_am_i(client)
    except BaseException:
        await connection.close_web_client(client)
        raise
    owned_desk = None
    if desk is None and engine.settings.channels_file:
        desk = owned_desk = build_support_desk(engine)
    adapter = slack_adapter.SlackAdapter(engine, commands, client, identity, settings, desk)
    if settings.slack_app_token:
        link = connection.SocketMode(adapter.app, settings.slack_app_token, adapter.acks)
        mode = "Socket Mode"
    else:
        link = connection.HttpEvents(adapter.app, app, acks=adapter.acks)
        mode = f"HTTP events at {connection.EVENTS_PATH}"
    running = RunningSlack(adapter, link, connection.close_web_client, owned_desk)
    try:
        await link.start()
    except BaseException:
        await running.stop()        # a refused app token leaves no session open behind it
        raise
    log.info("Slack: connected to %s as @%s (%s) by %s", identity.get("team"), identity.get("user"),
             identity.get("user_id"), mode)
    await adapter.replay()
    return running
