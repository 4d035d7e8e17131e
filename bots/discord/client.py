"""discord.py's client as Confab runs it: the one place where Discord's events are wired to
what answers them. Messages and the first ready go to the adapter's listeners, slash commands
through the command tree (slash.py), a template's form through its modal (forms.py), button
clicks through the buttons (buttons.py); every listener is given here as a `Listeners`, so
nothing finds the adapter itself.

Also how the client is pointed at another Discord (a loopback fake: `point_at`), how each
interaction's first response is timed (`interaction_acks`), and the invite link.
"""
from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from typing import Awaitable, Callable

import aiohttp
import discord
import discord.gateway
import discord.http
import yarl

from bots.common.acks import AckClock
from bots.discord.buttons import CancelButton, FeedbackButton, RerollButton, SpeakButton
from bots.discord.forms import RunTemplate, TemplateModal
from bots.discord.slash import OnSlash, OnTemplate, build_tree
from engine.flows.templates import Template

log = logging.getLogger(__name__)

# What Confab does in a server: read and answer (in threads too), start support threads, attach
# audio and pictures, react, and send voice messages. README's invite link carries this number.
INVITE_PERMISSIONS = discord.Permissions(
    view_channel=True, send_messages=True, send_messages_in_threads=True, create_public_threads=True,
    read_message_history=True, attach_files=True, embed_links=True, add_reactions=True,
    use_application_commands=True, send_voice_messages=True)


def invite_url(application_id: int | str) -> str:
    return discord.utils.oauth_url(application_id, permissions=INVITE_PERMISSIONS,
                                   scopes=("bot", "applications.commands"))


def point_at(api_url: str, gateway_url: str) -> Callable[[], None]:
    """Send discord.py's REST calls to `api_url` and its first gateway connection to
    `gateway_url` (internals: `Route.BASE`, `DiscordWebSocket.DEFAULT_GATEWAY`); returns a
    function that restores them."""
    saved = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    if api_url:
        discord.http.Route.BASE = api_url.rstrip("/")
    if gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)

    def restore() -> None:
        discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = saved
    return restore


_CALLBACK = re.compile(r"/interactions/(\d+)/[^/]+/callback$")


def interaction_acks(acks: AckClock) -> aiohttp.TraceConfig:
    """Notes each interaction's first response (defer, message or modal) as Discord answers it."""
    async def on_request_end(session, context, params: aiohttp.TraceRequestEndParams) -> None:
        found = _CALLBACK.search(params.url.path)
        if found and params.response.status < 300:
            acks.acked(found.group(1))
    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_request_end)
    return trace


@dataclass(frozen=True)
class Listeners:
    """What answers each kind of Discord event."""
    message: Callable[[discord.Message], Awaitable[None]]
    first_ready: Callable[[], None]             # connected for the first time: replay what was kept
    slash: OnSlash
    template: OnTemplate                        # a template's slash command
    form: RunTemplate                           # its form, filled in
    cancel: Callable[[discord.Interaction, str], Awaitable[None]]              # the job's id
    speak: Callable[[discord.Interaction], Awaitable[None]]
    reroll: Callable[[discord.Interaction, str], Awaitable[None]]              # the picture's job id
    feedback: Callable[[discord.Interaction, bool, int | None, str], Awaitable[None]]


class ConfabClient(discord.Client):
    def __init__(self, listeners: Listeners, acks: AckClock, guild_ids: tuple[str, ...] = (), *,
                 guild_ready_timeout: float, identify_delay: float):
        """`guild_ids`: the servers slash commands are synced to (at once); none: globally."""
        intents = discord.Intents.default()
        intents.message_content = True      # privileged: enable it in the developer portal
        super().__init__(intents=intents, guild_ready_timeout=guild_ready_timeout,
                         allowed_mentions=discord.AllowedMentions.none(),
                         http_trace=interaction_acks(acks))
        self.listeners, self.acks, self.guild_ids = listeners, acks, guild_ids
        self.identify_delay = identify_delay
        self.tree = build_tree(self, listeners.slash, listeners.template)
        self.ready = asyncio.Event()

    def modal(self, template: Template, given: dict, interaction: discord.Interaction) -> TemplateModal:
        """The form for the slots of `template` that the slash command did not give."""
        return TemplateModal(template, given, str(interaction.id), self.listeners.form)

    def dispatch(self, event: str, /, *args, **kwargs) -> None:
        # discord.py dispatches "interaction" as it parses INTERACTION_CREATE off the gateway,
        # before any handler runs: Discord's 3 s for the first response start here for Confab
        if event == "interaction" and args:
            self.acks.received(str(args[0].id))
        super().dispatch(event, *args, **kwargs)

    async def setup_hook(self) -> None:
        self.add_dynamic_items(CancelButton, SpeakButton, RerollButton, FeedbackButton)
        await self.sync_commands()

    async def sync_commands(self) -> None:
        try:
            if self.guild_ids:
                for gid in self.guild_ids:
                    guild = discord.Object(id=int(gid))
                    self.tree.copy_global_to(guild=guild)
                    synced = await self.tree.sync(guild=guild)
                    log.info("Discord: %d slash commands synced to server %s", len(synced), gid)
            else:
                synced = await self.tree.sync()
                log.info("Discord: %d slash commands synced globally (they can take a while to "
                         "appear; set CONFAB_DISCORD_GUILD_IDS for instant ones)", len(synced))
        except discord.Forbidden:
            log.error("Discord refused the slash commands: invite the bot with the "
                      "applications.commands scope.")
        except discord.HTTPException as e:
            log.error("Discord refused the slash commands: %s", e)

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        # Discord allows one IDENTIFY per 5 s per bot (max_concurrency 1): discord.py's default.
        if not initial:
            await asyncio.sleep(self.identify_delay)

    async def on_ready(self) -> None:
        log.info("Discord: connected as %s (%s) in %d servers", self.user, self.user.id, len(self.guilds))
        if not self.ready.is_set():
            if self.application_id:
                log.info("Discord: add Confab to a server with %s", invite_url(self.application_id))
            self.listeners.first_ready()
        self.ready.set()

    async def on_message(self, message: discord.Message) -> None:
        await self.listeners.message(message)
