"""The Slack adapter's pure parts and its start-up checks: no model needed."""
from __future__ import annotations

import json
import time
import urllib.parse
from pathlib import Path

import pytest
import pytest_asyncio
import yaml

import bots.slack
from bots.common.access import Access, Lists, RateLimit
from bots.common.commands import Commands
from bots.slack.adapter import SLASH_COMMANDS
from bots.slack.events import Seen, command_name, said, strip_mention
from bots.slack.mrkdwn import to_mrkdwn
from engine import ConfigError, Engine, Settings
from tests.bots.slack.conftest import running_confab
from tests.conftest import slack_settings

ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("markdown, mrkdwn", [
    ("**bold** and *it* and ~~gone~~", "*bold* and _it_ and ~gone~"),
    ("# Title\n- one\n- two", "*Title*\n• one\n• two"),
    ("see [the docs](https://example.com/a?b=1)", "see <https://example.com/a?b=1|the docs>"),
    ("a < b & c > d", "a &lt; b &amp; c &gt; d"),
    ("```python\nif a<b: print('**x**')\n```", "```\nif a&lt;b: print('**x**')\n```"),
    ("keep `**code**` as is", "keep `**code**` as is"),
    ("hi <@U1>, 2*3*4", "hi <@U1>, 2*3*4"),
])
def test_markdown_to_mrkdwn(markdown, mrkdwn):
    assert to_mrkdwn(markdown) == mrkdwn


@pytest.mark.asyncio(loop_scope="module")
async def test_which_events_are_questions(fake):
    mention, twin = fake.mention_pair("<@UBOT> hello there")
    assert said(mention, "T1", "UBOT", "BBOT").text == "hello there"
    assert said(twin, "T1", "UBOT", "BBOT").thread_ts == mention["ts"]   # the twin: deduplicated by Seen
    assert said(fake.message_event("no mention"), "T1", "UBOT", "BBOT") is None
    dm = said(fake.im_event("hi"), "T1", "UBOT", "BBOT")
    assert dm.is_dm and dm.thread_ts is None and dm.conversation.endswith(":dm")
    other_bot = fake.bot_message_event("<@UBOT> beep")
    assert said(other_bot, "T1", "UBOT", "BBOT") is None
    assert said(other_bot, "T1", "UBOT", "BBOT", answer_bots=("B0OTHER",)) is not None
    edited = dict(twin, subtype="message_changed")
    assert said(edited, "T1", "UBOT", "BBOT") is None
    clip = said(fake.audio_clip_event(b"x"), "T1", "UBOT", "BBOT")
    assert clip is not None and clip.files[0]["subtype"] == "slack_audio"
    marked = {**fake.audio_clip_event(b"x"), "subtype": "slack_audio"}
    assert said(marked, "T1", "UBOT", "BBOT").files[0]["subtype"] == "slack_audio"
    seen = Seen(size=2)
    assert seen.first("a") and not seen.first("a") and seen.first("b") and seen.first("c") and seen.first("a")
    assert strip_mention("<@UBOT|confab>  what?", "UBOT") == "what?"
    assert command_name("/confab-ask") == "ask" and command_name("/queue") == "queue"


def test_access_lists_and_rate():
    now = [0.0]
    access = Access(Lists.of(deny_channels=["C9"], deny_users=["U9"]), RateLimit(2, clock=lambda: now[0]))
    assert "not set up" in access.check("U9", "C1")
    assert "this channel" in access.check("U1", "C9")
    assert access.check("U1", "C1") is None and access.check("U1", "C1") is None
    assert "try again in about 60 s" in access.check("U1", "C1").lower()
    assert access.check("U1", "C1", is_admin=True) is None
    now[0] = 61.0
    assert access.check("U1", "C1") is None
    only = Access(Lists.of(allow_users=["U1"]), RateLimit(0))
    assert only.check("U2", "C1") and only.check("U1", "C1") is None


def test_manifest_matches_the_adapter():
    manifest = yaml.safe_load((ROOT / "deploy" / "slack-app-manifest.yaml").read_text())
    commands = {c["command"] for c in manifest["features"]["slash_commands"]}
    assert commands == {"/" + name for name in SLASH_COMMANDS}
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert {"app_mentions:read", "chat:write", "commands", "files:read", "files:write", "im:history",
            "users:read"} <= scopes
    settings = manifest["settings"]
    assert settings["socket_mode_enabled"] is True and settings["interactivity"]["is_enabled"]
    # voice clips and file-only messages in channels arrive only as message.channels / .groups
    assert {"app_mention", "message.im", "message.channels", "message.groups"} <= set(
        settings["event_subscriptions"]["bot_events"])
    assert {"channels:history", "groups:history"} <= scopes
    assert "usergroups:read" in scopes      # support channels stand down for the group's members


def test_fixtures_name_their_source():
    for path in (ROOT / "tests" / "fixtures" / "slack").glob("*.json"):
        assert json.loads(path.read_text())["_source"].startswith("https://api.slack.com/"), path.name


# -- start-up ---------------------------------------------------------------------------------

@pytest_asyncio.fixture(loop_scope="module")
async def bare_engine(tmp_path):
    """An engine that is never asked to run a model."""
    engine = Engine(Settings.from_env(env={}, dotenv=None, data_dir=str(tmp_path)))
    await engine.start(resume=False)
    try:
        yield engine
    finally:
        await engine.close()


@pytest.mark.asyncio(loop_scope="module")
async def test_no_token_no_adapter(bare_engine):
    assert await bots.slack.start(bare_engine, Commands(bare_engine), None) is None


@pytest.mark.asyncio(loop_scope="module")
async def test_a_wrong_token_is_a_clear_start_up_error(fake, bare_engine):
    settings = slack_settings(slack_bot_token="xoxb-wrong", slack_app_token=fake.app_token,
                              slack_api_url=fake.api_url)
    with pytest.raises(ConfigError, match=r"SLACK_BOT_TOKEN was refused by Slack \(invalid_auth\)"):
        await bots.slack.start(bare_engine, Commands(bare_engine), None, settings)
    for bad, words in ((dict(slack_bot_token="xapp-oops"), "must be the app's Bot User OAuth Token"),
                       (dict(slack_bot_token=fake.bot_token, slack_app_token="", slack_signing_secret=""),
                        r"SLACK_APP_TOKEN \(Socket Mode\) or SLACK_SIGNING_SECRET")):
        with pytest.raises(ConfigError, match=words):
            await bots.slack.start(bare_engine, Commands(bare_engine), None, settings.replace(**bad))
    wrong_app = settings.replace(slack_bot_token=fake.bot_token, slack_app_token="xapp-wrong")
    with pytest.raises(ConfigError, match="SLACK_APP_TOKEN was refused by Slack"):
        await bots.slack.start(bare_engine, Commands(bare_engine), None, wrong_app)
    assert not fake.problems


@pytest.mark.asyncio(loop_scope="module")
async def test_http_mode_refuses_bad_signatures_and_answers_url_verification(fake, bare_engine):
    async with running_confab(fake, "http", bare_engine) as confab:
        body = fake.slash_command_body("/help")
        assert (await fake.signed_post(confab.url, body, fake.FORM, secret="not-the-secret"))[0] == 401
        stale = int(time.time()) - 301
        assert (await fake.signed_post(confab.url, body, fake.FORM, timestamp=stale))[0] == 401
        challenge = fake.url_verification_body("chal-123")
        status, text = await fake.signed_post(confab.url, challenge, fake.JSON)
        assert status == 200 and json.loads(text)["challenge"] == "chal-123"
        assert (await fake.signed_post(confab.url, challenge, fake.JSON, secret="bad"))[0] == 401
        assert not fake.response_url_posts   # nothing forged got through
    assert not fake.problems


@pytest.mark.asyncio(loop_scope="module")
async def test_http_mode_refuses_deeply_nested_bodies_before_bolt_parses_them(fake, bare_engine):
    """bolt parses a body (or a form's payload field) with json.loads before it checks the
    signature, so anyone who can reach /slack/events could send one 10,000 levels deep: a
    RecursionError, HTTP 500. Refused with a 400 instead, signed or not, at any depth past the
    bound; a slash command's text full of brackets is no JSON and goes through."""
    deep_blocks = "[" * 10_000 + "]" * 10_000
    event = json.loads(fake.event_callback_body({"type": "message", "channel": "C1", "user": "U1",
                                                 "text": "hi", "ts": "1.000001"}).decode())
    event["event"]["blocks"] = "@BLOCKS@"
    deep_event = json.dumps(event).replace('"@BLOCKS@"', deep_blocks)
    action = fake.interactive("confab_cancel", "job_x", ephemeral=True)
    action["state"] = "@STATE@"
    deep_action = "payload=" + urllib.parse.quote(
        json.dumps(action).replace('"@STATE@"', '{"v":' * 500 + "1" + "}" * 500), safe="")
    async with running_confab(fake, "http", bare_engine) as confab:
        for body, ctype in ((deep_event, fake.JSON), (deep_action, fake.FORM),
                            (deep_event, "text/plain")):      # bolt parses any body that starts with {
            status, text = await fake.signed_post(confab.url, body, ctype)
            assert status == 400 and "64 levels" in text, (status, text[:200])
            status, _ = await fake.signed_post(confab.url, body, ctype, secret="not-the-secret")
            assert status == 400
        status, _ = await fake.signed_post(confab.url, fake.slash_command_body("/help", "[" * 5000), fake.FORM)
        assert status == 200
        challenge = fake.url_verification_body("still-here")
        status, text = await fake.signed_post(confab.url, challenge, fake.JSON)
        assert status == 200 and json.loads(text)["challenge"] == "still-here"
    assert not fake.problems


@pytest.mark.asyncio(loop_scope="module")
async def test_socket_mode_reconnects_after_disconnect(fake, bare_engine):
    async with running_confab(fake, "socket", bare_engine) as confab:
        await fake.send_disconnect("refresh_requested", grace=0.5)
        await fake.wait_connected(2, timeout=10)
        await fake.wait_until(lambda: fake.connection_count == 1, 10, "the old connection to close")
        # one to check the app token at start-up, one to connect, one to reconnect
        assert len(fake.calls_to("apps.connections.open")) == 3
        took = await confab.slash("/help")
        assert took < 3.0
        await fake.wait_until(lambda: fake.response_url_posts, 10, "the help text")
    assert not fake.problems


@pytest.mark.asyncio(loop_scope="module")
async def test_file_downloads_carry_the_bot_token_and_refuse_slacks_sign_in_page(fake):
    from bots.slack.files import SharedFile, SlackAttachment, SlackFiles
    from engine import BadMedia
    png = b"\x89PNG\r\n\x1a\n" + bytes(64)
    shot = SharedFile.of(fake.image_file(png, name="shot.png"))
    good = SlackFiles(fake.bot_token, fake.api_url)
    wrong = SlackFiles("xoxb-not-this-one", fake.api_url)
    try:
        attachment = SlackAttachment(good, shot, 2**20)
        assert (attachment.name, attachment.mimetype, attachment.size) == ("shot.png", "image/png", len(png))
        assert await attachment.read() == png
        # Slack answers a download without the right token with a 200 HTML sign-in page
        with pytest.raises(BadMedia, match="sign-in page"):
            await SlackAttachment(wrong, shot, 2**20).read()
        assert fake.calls_to("files.download")[-1].response == "login page"
        fake.problems.clear()       # the fake notes that download as a problem; it was meant
        elsewhere = SharedFile.of(dict(fake.image_file(png), url_private_download="https://evil.example/x.png"))
        with pytest.raises(BadMedia, match="stored in Slack"):
            await good.download(elsewhere, 2**20)
        with pytest.raises(BadMedia, match="MB"):
            await SlackAttachment(good, shot, 16).read()
        # Slack may redirect a download: followed, with the token, only to Slack's own hosts
        url = urllib.parse.urlsplit(shot.url)
        fake.redirect_download(shot.id, url.path + "?hop=1")
        assert await good.download(shot, 2**20) == png
        assert [c.status for c in fake.calls_to("files.download")[-2:]] == [302, 200]
        fake.redirect_download(shot.id, "https://evil.example/steal")
        with pytest.raises(BadMedia, match="only read files stored in Slack"):
            await good.download(shot, 2**20)
    finally:
        await good.close()
        await wrong.close()
