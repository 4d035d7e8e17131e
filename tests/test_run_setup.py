"""`make run`'s set-up alone serves every model it lists: a virtual environment made by the
Makefile's `setup` target (not the tests' fuller one), `confab serve` started from it on a fresh
data folder, and each model that GET /v1/models lists called through its own endpoint with the
official openai client. Found when the MiniLM embeddings were listed but answered 503
("sentence-transformers is not installed"): the package that ships the weights was installed,
the library that runs them was not.

The environment is kept in build/run-setup-venv and made again by make only when pyproject.toml
or requirements/models.txt change, so the first run pays for the installs (minutes) and later
runs do not.
"""
from __future__ import annotations

import asyncio
import base64
import io
import math
import os
import shutil
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.speech_helpers import espeak, requires_speech_tools, words

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / "build" / "run-setup-venv"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400), requires_speech_tools,
              pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")]


def clean_env(**more: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CONFAB_", "SLACK_", "DISCORD_", "VIRTUAL_ENV", "PYTHONPATH", "MAKE", "MFLAGS"))}
    env.update(more)
    return env


@pytest.fixture(scope="module")
def run_setup() -> Path:
    """The run set-up's environment, as `make run` makes it (system packages, the venv with the
    `all` extra and the offline models, and whatever else `setup` builds)."""
    r = subprocess.run(["make", "-C", str(ROOT), f"VENV={VENV}", "setup"], env=clean_env(),
                       capture_output=True, text=True, timeout=2000)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (VENV / "bin" / "confab").exists()
    return VENV


def png_with_text(text: str) -> bytes:
    from PIL import Image, ImageDraw, ImageFont
    image = Image.new("RGB", (520, 110), "white")
    ImageDraw.Draw(image).text((20, 25), text, fill="black", font=ImageFont.load_default(size=44))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


async def test_every_listed_model_answers_through_its_endpoint(run_setup, tmp_path):
    from openai import AsyncOpenAI
    port = free_port()
    env = clean_env(CONFAB_DATA_DIR=str(tmp_path / "data"), CONFAB_MODELS_DIR=str(tmp_path / "models"),
                    CONFAB_PORT=str(port), CONFAB_THREADS="2", CONFAB_LOG_LEVEL="INFO")
    log = tmp_path / "confab.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(run_setup / "bin" / "confab"), "serve"], env=env, cwd=tmp_path,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        async def up():
            while True:
                assert proc.poll() is None, log.read_text()[-3000:]
                try:
                    await asyncio.to_thread(urllib.request.urlopen, f"http://127.0.0.1:{port}/healthz", None, 2)
                    return
                except OSError:
                    await asyncio.sleep(0.2)
        await asyncio.wait_for(up(), 120)
        client = AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=600)
        listed = {m.id: m.model_extra["kind"] for m in (await client.models.list()).data}
        assert {"chat", "stt", "tts", "embedding"} <= set(listed.values()), listed
        chat_model = next(name for name, kind in sorted(listed.items()) if kind == "chat")
        # Speech for the speech-to-text models: from the listed voice (Whisper base writes Piper's
        # speech down word for word, MODELS.md), else espeak-ng's
        speech = espeak("The weather is sunny today.", tmp_path / "speech.wav").read_bytes()
        answered = {}
        for name, kind in sorted(listed.items(), key=lambda item: (item[1] != "tts", item[0])):
            if kind == "chat":
                r = await client.chat.completions.create(
                    model=name, max_tokens=16, seed=1,
                    messages=[{"role": "system", "content": "You are a helpful assistant."},
                              {"role": "user", "content": "What is the capital of France?"}])
                answered[name] = r.choices[0].message.content
                assert answered[name].strip() and r.usage.completion_tokens > 0
            elif kind == "stt":
                text = (await client.audio.transcriptions.create(model=name, file=("speech.wav", speech))).text
                answered[name] = text
                assert {"weather", "sunny"} <= set(words(text)), (name, text)
            elif kind == "tts":
                audio = await client.audio.speech.create(model=name, voice="alloy", response_format="wav",
                                                         input="The weather is sunny today.")
                speech = audio.content
                answered[name] = f"{len(speech)} bytes"
                assert speech[:4] == b"RIFF" and speech[8:12] == b"WAVE" and len(speech) > 20_000
            elif kind == "embedding":
                r = await client.embeddings.create(model=name, input=["A cat sat on the mat.",
                                                                      "A kitten rested on the rug.",
                                                                      "Quarterly tax filing deadlines."])
                vectors = [d.embedding for d in r.data]
                answered[name] = f"{len(vectors)} x {len(vectors[0])}"

                def cos(a, b):
                    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
                assert len(vectors) == 3 and len(vectors[0]) == 384
                assert cos(vectors[0], vectors[1]) > cos(vectors[0], vectors[2])
            elif kind == "ocr":          # images in chat, read by OCR when no vision model is listed
                url = "data:image/png;base64," + base64.b64encode(png_with_text("INVOICE 4821")).decode()
                raw = await client.chat.completions.with_raw_response.create(
                    model=chat_model, max_tokens=16, seed=1,
                    messages=[{"role": "user", "content": [
                        {"type": "text", "text": "What does the picture say?"},
                        {"type": "image_url", "image_url": {"url": url}}]}])
                assert raw.headers.get("X-Confab-Image-Path") == "ocr"
                answered[name] = raw.parse().choices[0].message.content
                assert answered[name].strip()
            else:
                pytest.fail(f"/v1/models lists {name} of kind {kind!r}, which this test cannot call yet")
        assert set(answered) == set(listed), answered
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(asyncio.to_thread(proc.wait), 60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
