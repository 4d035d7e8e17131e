"""The Discord adapter's pure parts: access and priority rules, the download allow-list, the
voice-message waveform, the record an interaction is kept as, and discord.py's HTTP layer the
voice messages are built on."""
from __future__ import annotations

import dataclasses
import struct

import pytest

from bots.common.commands import Call
from bots.discord.access import DiscordAccess, Who
from bots.discord.buttons import job_id_in
from bots.discord.events import Interacted
from bots.discord.files import may_download
from bots.discord.history import clean
from bots.discord.voice import MAX_WAVEFORM, check_http_layer
from engine import priority_class
from engine.media.audio import waveform
from tests.conftest import discord_settings


def test_discord_py_http_layer_has_not_moved():
    """If this fails after a discord.py upgrade, fix bots/discord/voice.send_voice_message."""
    check_http_layer()


def test_admins_by_id_or_role_and_dms_are_class_0():
    access = DiscordAccess(discord_settings(discord_admin_roles=("7",)), admins=("discord:42",))
    guild = dict(channel_id="c", guild_id="g")
    assert priority_class(access.origin(Who("42", **guild))) == 0
    assert priority_class(access.origin(Who("1", role_ids=frozenset({"7"}), **guild))) == 0
    assert priority_class(access.origin(Who("1", channel_id="dm"))) == 0
    assert priority_class(access.origin(Who("1", **guild))) == 1


def test_allow_lists_of_guilds_channels_and_roles():
    access = DiscordAccess(discord_settings(discord_allow_guilds=("g",), discord_allow_channels=("c",),
                                            discord_allow_roles=("r",), discord_admin_roles=("boss",),
                                            discord_user_rate=0))
    ok = Who("1", "c", "g", role_ids=frozenset({"r"}))
    assert access.check(ok) is None
    assert "server" in access.check(Who("1", "c", "other", role_ids=frozenset({"r"})))
    assert "channel" in access.check(Who("1", "x", "g", role_ids=frozenset({"r"})))
    assert access.check(Who("1", "thread", "g", parent_id="c", role_ids=frozenset({"r"}))) is None
    assert "role" in access.check(Who("1", "c", "g"))
    assert access.check(Who("1", "c", "g", role_ids=frozenset({"boss"}))) is None
    assert "role" in access.check(Who("1", "dm"))          # roles cannot be seen in a DM
    assert "direct" in DiscordAccess(discord_settings(discord_allow_dms=False)).check(Who("1", "dm"))


def test_per_user_rate_limit_spares_admins():
    now = [0.0]
    access = DiscordAccess(discord_settings(discord_user_rate=2), admins=("discord:9",), clock=lambda: now[0])
    who = Who("1", "c", "g")
    assert access.check(who) is None and access.check(who) is None
    assert "limit" in access.check(who)
    assert all(access.check(Who("9", "c", "g")) is None for _ in range(5))
    now[0] = 61.0
    assert access.check(who) is None


@pytest.mark.parametrize("url, ok", [
    ("https://cdn.discordapp.com/attachments/1/2/a.ogg?ex=1", True),
    ("https://media.discordapp.net/attachments/1/2/a.ogg", True),
    ("http://cdn.discordapp.com/attachments/1/2/a.ogg", False),
    ("https://cdn.discordapp.com.evil.example/a.ogg", False),
    ("https://evil.example/cdn.discordapp.com/a.ogg", False),
    ("http://127.0.0.1:5000/attachments/1/2/a.ogg", True),          # the API host and port
    ("http://127.0.0.1:5001/attachments/1/2/a.ogg", False),
    ("file:///etc/passwd", False),
])
def test_downloads_only_from_discord_hosts_and_the_api_host(url, ok):
    assert may_download(url, "http://127.0.0.1:5000/api/v10") is ok


def test_waveform_follows_the_loudness_and_is_bounded():
    rate = 16_000
    quiet, loud = struct.pack("<h", 300), struct.pack("<h", 30_000)
    pcm = b"".join((loud if (i // 1600) % 2 else quiet) for i in range(rate * 2))   # 2 s, 0.1 s steps
    wave = waveform(pcm, rate)
    assert len(wave) == 20 and max(wave) == 255
    assert all(w < 10 for w in wave[0::2]) and all(w == 255 for w in wave[1::2])
    long = waveform(bytes(2) * rate * 60, rate)               # a minute of silence
    assert len(long) == MAX_WAVEFORM and set(long) == {0}
    assert len(waveform(b"", rate)) == 1


def test_small_helpers():
    assert clean("<@123> hello <@!123> <@456>", 123) == "hello  <@456>"
    assert job_id_in("queued (job_0123456789abcdef0123)") == "job_0123456789abcdef0123"
    assert job_id_in("") is None


def test_button_ids_fit_discord_custom_id_limit():
    """A custom_id holds at most 100 characters: Re-roll names the job, not the request."""
    from bots.discord.buttons import CancelButton, RerollButton
    job = "job_0123456789abcdef0123"
    for button in (CancelButton(job), RerollButton(job)):
        assert len(button.item.custom_id) <= 100 and button.item.custom_id.endswith(job)


def test_a_kept_interaction_comes_back_as_it_was_kept():
    """Its typed call (a slash command's options too) survives the store; records kept before
    the calls were typed (the command's text in `arg`, no `options`) still read."""
    who = Who("1", "c", "g", role_ids=frozenset({"r"}))
    slash = Interacted("slash", who, "c", "", "app", "token", 12.5, Call("translate", "Hello", {"languages": "fr"}))
    template = Interacted("template", who, "c", "t", "app", "token", 12.5, Call("promo"), values={"product": "Tea"})
    reroll = Interacted("reroll", who, "c", "", "app", "token", 12.5, Call("reroll"), job="job_0123456789abcdef0123")
    for event in (slash, template, reroll):
        assert Interacted.of_record(event.to_record()) == event
    kept = {"kind": "slash", "who": who.to_record(), "thread": "", "channel": "c", "app": "app", "token": "token",
            "at": 12.5, "name": "cancel", "arg": "job_0123456789abcdef0123", "attachment": None}
    assert Interacted.of_record(kept).call == Call("cancel", "job_0123456789abcdef0123")
    kept = {**kept, "kind": "template", "name": "promo", "values": {"product": "Tea"}}
    del kept["arg"], kept["attachment"]
    assert Interacted.of_record(kept) == dataclasses.replace(template, thread="")
