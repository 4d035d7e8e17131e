"""Live voice, the four ways in side by side in one run, with the default settings: from the end
of speech to the first audio of the answer (ms), and first audio ÷ full answer audio (goal 0.35),
for the push-to-talk loop, the Realtime API (/v1/realtime through the openai client) and the
talk page (headless Chromium with a WAV as its microphone). The same question each time, each
way in its own conversation; one warm-up turn loads every model first.

Run: `python -m tests.bench.bench_voice` (or `make bench`).
"""
from __future__ import annotations

import asyncio
import base64
import statistics
import tempfile
import time
from pathlib import Path

QUESTION = "Tell me a short story about a cat who lives in a lighthouse."
REPEATS = 2


async def loop_turns(engine, wav: bytes) -> list[tuple[float, float]]:
    from voice.loop import FilePlayer, VoiceLoop
    out = []
    for i in range(REPEATS):
        r = await VoiceLoop(engine, FilePlayer(), user=f"bench-loop{i}").turn(wav)
        out.append((r.first_audio_s, r.full_audio_s))
    return out


async def realtime_turns(client, pcm: bytes) -> list[tuple[float, float]]:
    out = []
    for _ in range(REPEATS):
        async with client.realtime.connect(model="gpt-realtime") as conn:
            await conn.recv()
            await conn.session.update(session={"type": "realtime", "audio": {"input": {"turn_detection": None}}})
            await conn.recv()
            for i in range(0, len(pcm), 9600):
                await conn.input_audio_buffer.append(audio=base64.b64encode(pcm[i:i + 9600]).decode())
            await conn.input_audio_buffer.commit()
            started, first = time.monotonic(), None       # the end of speech: the turn is committed
            await conn.response.create()
            async for ev in conn:
                if ev.type == "response.output_audio.delta" and first is None:
                    first = time.monotonic() - started
                if ev.type == "response.done":
                    out.append((first, time.monotonic() - started))
                    break
    return out


async def page_turns(base: str, folder: Path) -> list[float]:
    from tests.api.test_talk_page import fake_microphone, hold, microphone
    from tests.browser import Browser, chromium_path
    if chromium_path() is None:
        return []
    out = []
    for i in range(REPEATS):
        wav, seconds = microphone(folder)
        browser = await Browser.launch(folder / f"profile{i}", flags=fake_microphone(wav))
        try:
            await browser.goto(f"{base}/talk")
            await hold(browser, "#talk", seconds + 0.3)
            await browser.wait_for("window.talk.answers.length > 0", 300)
            turn = await browser.eval("window.talk.turns[0]")
            out.append((turn["firstAudio"] - turn["released"]) / 1000)
        finally:
            await browser.close()
    return out


async def _run() -> list[tuple[str, float, str]]:
    from openai import AsyncOpenAI

    from engine import Engine
    from tests.api.test_realtime import pcm24
    from tests.conftest import chat_model_installed, make_settings
    from tests.speech_helpers import espeak, serve
    if not chat_model_installed():
        return [("voice", float("nan"), "no chat model installed")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="confab-bench-voice-") as tmp:
        folder = Path(tmp)
        wav = espeak(QUESTION, folder / "q.wav").read_bytes()
        pcm = pcm24(folder / "q.wav")
        engine = Engine(make_settings(folder / "data", folder / "models"))      # the defaults
        await engine.start(resume=False)
        try:
            async with serve(engine) as base, AsyncOpenAI(base_url=base, api_key="x", max_retries=0,
                                                          timeout=600) as client:
                await loop_turns(engine, wav)                   # warm: every model loaded
                loop = await loop_turns(engine, wav)
                realtime = await realtime_turns(client, pcm)
                page = await page_turns(base.removesuffix("/v1"), folder)
        finally:
            await engine.close()
    for name, turns in (("loop", loop), ("realtime", realtime)):
        firsts = [f for f, _ in turns if f is not None]
        ratios = [f / full for f, full in turns if f is not None and full]
        rows.append((f"{name}_first_audio_ms", round(statistics.median(firsts) * 1000),
                     f"end of speech to first answer audio, median of {len(firsts)}"))
        rows.append((f"{name}_first_over_full", round(statistics.median(ratios), 3),
                     f"first audio ÷ full answer audio ({statistics.median([full for _, full in turns]):.2f} s); "
                     "goal <= 0.35, default settings"))
    if page:
        rows.append(("talk_page_first_audio_ms", round(statistics.median(page) * 1000),
                     f"button let go to first answer audio in Chromium, median of {len(page)}"))
    return rows


def run() -> list[tuple[str, float, str]]:
    return asyncio.run(_run())


if __name__ == "__main__":
    for row in run():
        print(f"{row[0]:<28} {row[1]:>8}  {row[2]}")
