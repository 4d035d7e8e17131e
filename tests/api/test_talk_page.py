"""The talk page in headless Chromium, with a real WAV file (espeak-ng) as its microphone
(Chromium's fake-capture flags), driven over the DevTools protocol: hold the button while the
question plays, let go, and the page shows the words spoken and plays the answer's audio (real
Whisper, the SmolLM2 chat model and Piper behind /v1/realtime, with an API key from the page)."""
from __future__ import annotations

import asyncio
import json

import pytest
import pytest_asyncio

from engine import Engine
from engine.media import audio
from tests.browser import Browser, chromium_path
from tests.conftest import make_settings, requires_chat_model
from tests.speech_helpers import espeak, requires_speech_tools, serve, wer

pytestmark = [requires_speech_tools, requires_chat_model, pytest.mark.asyncio(loop_scope="module"),
              pytest.mark.skipif(chromium_path() is None, reason="chromium is not installed"),
              pytest.mark.timeout(300)]

KEY = "talk-page-key"
QUESTION = "What is the capital of France?"


def microphone(tmp_path) -> tuple[str, float]:
    """The question as a 48 kHz WAV with quiet around it; Chromium plays it once (%noloop)."""
    speech = audio.decode(espeak(QUESTION, tmp_path / "q.wav").read_bytes(), 2**26, 60, 30, rate=48_000)
    pcm = audio.silence(0.5, 48_000) + speech + audio.silence(0.5, 48_000)
    audio.write_wav(tmp_path / "mic.wav", pcm)
    return str(tmp_path / "mic.wav"), pcm.duration_s


def fake_microphone(path: str) -> tuple[str, ...]:
    return ("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={path}%noloop", "--autoplay-policy=no-user-gesture-required")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def site(tmp_path_factory, shared_models_dir):
    engine = Engine(make_settings(tmp_path_factory.mktemp("data"), shared_models_dir, api_keys=(KEY,),
                                  default_stt_model="whisper-tiny.en", voice_max_tokens=40))
    await engine.start(resume=False)
    async with serve(engine) as base:
        yield engine, base.removesuffix("/v1")
    await engine.close()


async def hold(browser: Browser, selector: str, seconds: float) -> None:
    """Press the mouse on the element, keep it down `seconds`, let go (real input events)."""
    box = await browser.wait_for(f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
                                 ".getBoundingClientRect(); return {x: r.left + r.width / 2, y: r.top + r.height / 2}; })()")
    common = {"x": box["x"], "y": box["y"], "button": "left", "clickCount": 1}
    await browser.send("Input.dispatchMouseEvent", {"type": "mouseMoved", **common})
    await browser.send("Input.dispatchMouseEvent", {"type": "mousePressed", **common})
    await asyncio.sleep(seconds)
    await browser.send("Input.dispatchMouseEvent", {"type": "mouseReleased", **common})


async def test_the_page_hears_the_question_and_plays_the_answer(site, tmp_path):
    engine, base = site
    wav, seconds = microphone(tmp_path)
    browser = await Browser.launch(tmp_path / "profile", flags=fake_microphone(wav))
    try:
        await browser.goto(f"{base}/talk")
        await browser.type("#key", KEY)
        await hold(browser, "#talk", seconds + 0.8)
        heard = await browser.wait_for("window.talk.heard[0]", 120)
        assert wer(QUESTION, heard) <= 0.4, heard
        await browser.wait_for("window.talk.answers.length > 0", 180)
        state = await browser.eval("({bytes: window.talk.audioBytes, answers: window.talk.answers,"
                                   " errors: window.talk.errors, log: document.getElementById('log').innerText,"
                                   " key: sessionStorage.getItem('confab-key')})")
        assert state["bytes"] > 24_000 * 2 * 0.5, state       # over half a second of answer played
        assert state["answers"][0].strip() and not state["errors"], state
        assert f"You: {heard}" in state["log"] and "Confab: " in state["log"]
        assert state["key"] == KEY                            # kept for the tab's session only
    finally:
        await browser.close()
    jobs = [h for h in engine._handles.values() if h.job.origin.is_live_voice]
    assert {h.job.kind for h in jobs} >= {"transcribe", "chat", "speak"} and {h.priority for h in jobs} == {0}


async def test_the_page_says_when_the_key_is_wrong(site, tmp_path):
    engine, base = site
    wav, seconds = microphone(tmp_path)
    browser = await Browser.launch(tmp_path / "profile", flags=fake_microphone(wav))
    try:
        await browser.goto(f"{base}/talk")
        await browser.type("#key", "not-the-key")
        await hold(browser, "#talk", 0.5)
        status = await browser.wait_for("window.talk.errors[0]", 30)
        assert "API key" in status
    finally:
        await browser.close()
