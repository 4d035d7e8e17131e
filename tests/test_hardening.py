"""Hardening: secrets never reach the logs of a full run; model names cannot leave the models
folder; uploads are judged by their bytes, not their names, on every endpoint that takes one."""
from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import math
import os
import signal
import struct
import subprocess
import sys
import wave
from pathlib import Path

import aiohttp
import pytest

from bots.api.app import create_app
from engine.safety.redact import MASK, RedactSecrets, redact, secret_values
from models.registry import ModelError, Registry
from tests.conftest import CHAT_MODEL, free_port, make_settings, requires_chat_model, slack_settings
from tests.fakes.discord import DiscordFake
from tests.fakes.slack import SlackFake
from tests.ops_helpers import FAKE_MODEL, fake_engine, serve

API_KEYS = ("sk-confab-4f9a8c1d2e3b7a6f", "sk-confab-second-77d1e0a9b8c2")
SLACK_BOT = "xoxb-1111111111-2222222222-ZyXwVuTsRqPoNmLkJiHgFeDc"
SLACK_APP = "xapp-1-A0123456789-3333333333-abcdef0123456789abcdef0123456789"
SLACK_SIGNING = "8f742231b10e8888abcd99aaabbb85a5"
DISCORD = "MTA5ODc2NTQzMjEwOTg3NjU0Mw.GaBcDe.fGhIjKlMnOpQrStUvWxYz0123456789abcd"
SECRETS = (*API_KEYS, SLACK_BOT, SLACK_APP, SLACK_SIGNING, DISCORD)


# -- secrets and logs ------------------------------------------------------------------------------

def test_redact_masks_configured_secrets_and_token_shapes():
    values = secret_values(make_settings("/tmp/unused", api_keys=API_KEYS), slack_settings(slack_bot_token=SLACK_BOT))
    assert set(API_KEYS) <= set(values) and SLACK_BOT in values
    text = redact(f"key={API_KEYS[0]} auth='Bearer {API_KEYS[1]}' tok={SLACK_APP} d={DISCORD} "
                  "other xoxp-9999999999-abcdef", values)
    assert not any(s in text for s in SECRETS) and "xoxp-9999" not in text and MASK in text


def test_redacting_filter_cleans_messages_arguments_and_tracebacks():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("confab-redact-test")
    logger.addHandler(handler)
    logger.propagate = False
    handler.addFilter(RedactSecrets([API_KEYS[0]]))
    try:
        logger.warning("token %s in args", API_KEYS[0])
        try:
            raise RuntimeError(f"failed with {API_KEYS[0]}")
        except RuntimeError:
            logger.exception("boom")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert API_KEYS[0] not in out and out.count(MASK) >= 2 and "RuntimeError" in out


async def _until(predicate, timeout: float, what: str):
    async def loop():
        while not predicate():
            await asyncio.sleep(0.1)
    try:
        await asyncio.wait_for(loop(), timeout)
    except asyncio.TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


@requires_chat_model
async def test_a_full_run_logs_no_secret(tmp_path, shared_models_dir):
    """`confab run` at DEBUG with API keys, Slack tokens (Socket Mode) and a Discord token in
    its environment, both platforms' loopback fakes standing in for them: API calls with right and wrong keys, the
    Discord gateway identified with its token, a Slack mention answered; then every line it logged is searched for
    every secret."""
    slack = SlackFake(bot_token=SLACK_BOT, app_token=SLACK_APP)
    await slack.start()
    discord = DiscordFake(token=DISCORD)
    await discord.start()
    port = free_port()
    log_path = tmp_path / "confab.log"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("CONFAB_", "SLACK_", "DISCORD_"))},
           "HOME": str(tmp_path), "CONFAB_DATA_DIR": str(tmp_path / "data"),
           "CONFAB_MODELS_DIR": str(shared_models_dir),
           "CONFAB_PORT": str(port), "CONFAB_LOG_LEVEL": "DEBUG",
           "CONFAB_API_KEYS": ",".join(API_KEYS), "CONFAB_CHAT_MODEL": CHAT_MODEL,
           "CONFAB_MAX_TOKENS": "8", "CONFAB_THREADS": "2",
           "SLACK_BOT_TOKEN": SLACK_BOT, "SLACK_APP_TOKEN": SLACK_APP,
           "SLACK_SIGNING_SECRET": SLACK_SIGNING, "CONFAB_SLACK_API_URL": slack.api_url,
           "DISCORD_BOT_TOKEN": DISCORD, "CONFAB_DISCORD_API_URL": discord.api_base,
           "CONFAB_DISCORD_GATEWAY_URL": discord.gateway_url}
    with open(log_path, "wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "confab"), "run", "--no-console", cwd=tmp_path, env=env,
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as s:
            async def up():
                try:
                    async with s.get(f"{base}/healthz") as r:
                        return r.status == 200
                except aiohttp.ClientError:
                    return False
            for _ in range(600):
                if proc.returncode is not None or await up():
                    break
                await asyncio.sleep(0.1)
            assert proc.returncode is None, log_path.read_text()[-3000:]
            body = {"model": CHAT_MODEL, "max_tokens": 4,
                    "messages": [{"role": "user", "content": f"Repeat this: {API_KEYS[1]}"}]}
            # the asynchronous form answers at once (this machine may be busy; inference is not
            # what this test is about), and the job then runs with the prompt that holds a key
            async with s.post(f"{base}/v1/jobs", json={"endpoint": "/v1/chat/completions", "body": body},
                              headers={"Authorization": f"Bearer {API_KEYS[0]}"}) as r:
                assert r.status == 202
            async with s.post(f"{base}/v1/chat/completions", json=body,
                              headers={"Authorization": f"Bearer {API_KEYS[0]}x"}) as r:
                assert r.status == 401
            async with s.get(f"{base}/v1/models", headers={"Authorization": f"Bearer {API_KEYS[1]}"}) as r:
                assert r.status == 200
            async with s.post(f"{base}/dashboard/login", json={"key": API_KEYS[1]},
                              headers={"X-Confab-Dashboard": "1"}) as r:
                assert r.status == 200
        identify = await discord.wait_for_identify(timeout=60)   # the Discord token was used
        assert DISCORD in identify["token"]
        await slack.wait_connected(timeout=60)
        await slack.send_mention(f"<@{slack.bot_user_id}> say hi")
        await slack.wait_message("C1", lambda m: m.get("user") == slack.bot_user_id, timeout=60)
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except asyncio.TimeoutError:
                os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        await slack.stop()
        await discord.stop()
    logged = log_path.read_text(errors="replace")
    assert "DEBUG" in logged and len(logged.splitlines()) > 10     # the run really logged
    leaks = [(s[:12] + "…", line[:200]) for line in logged.splitlines() for s in SECRETS if s in line]
    assert not leaks, leaks
    # and the store: jobs, the audit log and conversations never hold a key
    db = (tmp_path / "data" / "confab.db").read_bytes()
    assert not any(k.encode() in db for k in (API_KEYS[0], SLACK_BOT, SLACK_APP, DISCORD))


# -- model names and paths ----------------------------------------------------------------------------

def _gguf(path: Path) -> Path:
    path.write_bytes(b"GGUF" + b"\0" * 64)
    return path


@pytest.mark.parametrize("name", ["../escape", "..", ".", "a/b", "a\\b", "/etc/passwd", "nul\0byte",
                                  "sub/../../x", " ", "x" * 200, "con\nsole"])
def test_registry_refuses_model_names_that_are_not_plain(tmp_path, name):
    reg = Registry(tmp_path / "data", tmp_path / "models")
    with pytest.raises(ModelError):
        reg.add(_gguf(tmp_path / "m.gguf"), name=name)


def test_manifests_in_the_models_folder_cannot_point_outside_it(tmp_path):
    models = tmp_path / "models"
    outside = _gguf(tmp_path / "elsewhere.gguf")
    for folder, path in (("evil", str(outside)), ("dots", str(models / "dots" / ".." / ".." / "elsewhere.gguf")),
                         ("good", str(models / "good" / "m.gguf"))):
        (models / folder).mkdir(parents=True)
        manifest = {"name": folder, "kind": "chat", "fmt": "gguf", "path": path, "size": 1}
        (models / folder / "confab-model.json").write_text(json.dumps(manifest))
    _gguf(models / "good" / "m.gguf")
    installed = Registry(tmp_path / "data", models).installed()
    assert "good" in installed and "evil" not in installed and "dots" not in installed


async def test_api_model_names_are_looked_up_never_opened(tmp_path):
    engine = fake_engine(make_settings(tmp_path))
    await engine.start()
    runner, base = await serve(create_app(engine))
    try:
        async with aiohttp.ClientSession() as s:
            for name in ("../../../../etc/passwd", "/etc/passwd", "..%2f..%2fetc%2fpasswd",
                         str(engine.registry.model_file), "fake-chat/../../x"):
                body = {"model": name, "messages": [{"role": "user", "content": "hi"}]}
                async with s.post(f"{base}/v1/chat/completions", json=body) as r:
                    assert r.status == 404, name
                    err = (await r.json())["error"]
                    assert err["code"] == "model_not_found" and "root:" not in err["message"]
                async with s.get(f"{base}/v1/models/{name.replace('/', '%2F')}") as r:
                    assert r.status == 404
            async with s.get(f"{base}/files/images/..%2F..%2Fconfab.db") as r:
                assert r.status == 404
            async with s.get(f"{base}/v1/models") as r:
                listed = json.dumps(await r.json())
                assert str(tmp_path) not in listed         # names only; no paths leave the server
    finally:
        await runner.cleanup()
        await engine.close()


# -- uploads are judged by content ----------------------------------------------------------------------

def tone_wav(seconds: float = 1.0, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate)))
                               for i in range(int(seconds * rate))))
    return buf.getvalue()


def png_bytes() -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.new("RGB", (64, 32), (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


FAKES = {
    "png named .wav": (png_bytes, "speech.wav", "audio/wav"),
    "ELF named .mp3": (lambda: b"\x7fELF" + os.urandom(4000), "song.mp3", "audio/mpeg"),
    "html named .ogg": (lambda: b"<html><script>alert(1)</script></html>" * 50, "voice.ogg", "audio/ogg"),
    "zip named .m4a": (lambda: b"PK\x03\x04" + os.urandom(2000), "memo.m4a", "audio/mp4"),
}


@pytest.mark.parametrize("endpoint", ["/v1/audio/transcriptions", "/v1/audio/translations"])
@pytest.mark.parametrize("case", list(FAKES))
async def test_audio_uploads_with_audio_names_but_other_bytes_are_refused(tmp_path, endpoint, case):
    make, filename, mime = FAKES[case]
    engine = fake_engine(make_settings(tmp_path))
    await engine.start()
    runner, base = await serve(create_app(engine))
    try:
        form = aiohttp.FormData()
        form.add_field("file", make(), filename=filename, content_type=mime)
        form.add_field("model", "whisper-1")
        async with aiohttp.ClientSession() as s:
            async with s.post(base + endpoint, data=form) as r:
                err = (await r.json())["error"]
                assert r.status == 400, err
                assert err["code"] == "invalid_media", err
    finally:
        await runner.cleanup()
        await engine.close()


async def test_real_audio_with_a_misleading_name_passes_the_media_check(tmp_path):
    """A WAV named picture.png with an image type is still audio: it gets past the media check
    (to the model lookup, which has no STT model in this rig, hence 404 rather than 400)."""
    engine = fake_engine(make_settings(tmp_path))
    await engine.start()
    runner, base = await serve(create_app(engine))
    try:
        form = aiohttp.FormData()
        form.add_field("file", tone_wav(), filename="picture.png", content_type="image/png")
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{base}/v1/audio/transcriptions", data=form) as r:
                err = (await r.json()).get("error", {})
                assert err.get("code") != "invalid_media", err
                assert r.status < 500
    finally:
        await runner.cleanup()
        await engine.close()


@pytest.mark.parametrize("declared, data", [
    ("image/png", lambda: b"%PDF-1.7\n" + os.urandom(3000)),
    ("image/jpeg", lambda: tone_wav(0.2)),
    ("image/gif", lambda: b"GIF89a" + bytes(range(256)) * 2),      # right magic, broken body
    ("image/png", lambda: png_bytes()[:60]),                       # a truncated PNG
])
async def test_image_parts_are_judged_by_their_bytes(tmp_path, declared, data):
    engine = fake_engine(make_settings(tmp_path))
    await engine.start()
    runner, base = await serve(create_app(engine))
    try:
        url = f"data:{declared};base64," + base64.b64encode(data()).decode()
        body = {"model": FAKE_MODEL, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": url}}]}]}
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{base}/v1/chat/completions", json=body) as r:
                err = (await r.json())["error"]
                assert r.status == 400 and err["code"] == "invalid_media", err
    finally:
        await runner.cleanup()
        await engine.close()


# -- attachments come only from the platforms' own file hosts -------------------------------------------

ATTACKER_URLS = ["https://evil.example/file.ogg", "http://files.slack.com/x", "https://files.slack.com.evil.example/x",
                 "https://user@evil.example/files.slack.com", "file:///etc/passwd", "http://127.0.0.1:8080/v1/models",
                 "http://169.254.169.254/latest/meta-data/", "https://cdn.discordapp.com.evil.example/a.ogg",
                 "http://cdn.discordapp.com/attachments/1/2/a.ogg", "ftp://cdn.discordapp.com/a.ogg"]


@pytest.mark.parametrize("url", ATTACKER_URLS)
def test_slack_files_are_fetched_only_from_slack(url):
    files = pytest.importorskip("bots.slack.files")
    slack = files.SlackFiles("xoxb-test")
    assert not slack.from_slack(url)
    assert slack.from_slack("https://files.slack.com/files-pri/T1-F1/download/a.m4a")


@pytest.mark.parametrize("url", ATTACKER_URLS)
def test_discord_attachments_are_fetched_only_from_discord(url):
    files = pytest.importorskip("bots.discord.files")
    assert not files.may_download(url)
    assert files.may_download("https://cdn.discordapp.com/attachments/1/2/voice-message.ogg")
