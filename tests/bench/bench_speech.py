"""Speech benchmarks, measured side by side in one run on this machine's CPU.

- transcription through Confab's API ÷ faster-whisper called directly, same audio and settings
  (goal <= 1.05);
- the voice loop's time to first audio ÷ its time to the full answer audio, on a multi-sentence
  answer (goal <= 0.35), with the engine running one job at a time and two;
- real-time factors (compute seconds per second of audio) of speech-to-text and text-to-speech.

Run: `python -m tests.bench.bench_speech` (or `make bench`, which runs every bench_*.py).
"""
from __future__ import annotations

import asyncio
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

STORY = ("The meeting moved to Thursday afternoon. Please bring the budget numbers for the second "
         "quarter, and the notes from the customer calls. Our new office opens next month in the "
         "city centre, close to the station. Everyone gets a desk by the window, and the kitchen "
         "has a real coffee machine. Remember to water the plants before you leave on Friday. "
         "If you have questions about the move, ask the facilities team or post them in the "
         "office channel.")
CLIPS = (
    "Our support team answers questions from customers every day. Most of them ask about refunds, "
    "delivery times and how to change the address on an order. The knowledge base covers all of "
    "these, and the assistant quotes the right page when it is sure of the answer.",
    "The build failed last night because a test timed out on the new server. We moved the slow "
    "tests to a separate job, raised the limit to five minutes, and added a note to the on-call "
    "guide. The next build passed in twelve minutes, about half the time it took before.",
)
QUESTION = "Tell me a short story about a cat who lives in a lighthouse."
REPEATS = 3
LOOP_REPEATS = 2


def _espeak(text: str, path: Path) -> bytes:
    subprocess.run(["espeak-ng", "-s", "160", "-w", str(path), text], check=True, timeout=60)
    return path.read_bytes()


async def _engine(folder: Path, **overrides):
    from engine import Engine
    from tests.conftest import make_settings
    engine = Engine(make_settings(folder / f"data-{len(overrides)}-{time.monotonic_ns()}",
                                  folder / "models", **overrides))
    await engine.start(resume=False)
    return engine


async def transcription_ratio(folder: Path, rows: list) -> None:
    """The same clip through the API (upload, ffmpeg intake, queue, worker, JSON) and through
    faster-whisper directly (which decodes the file itself), alternating; best of REPEATS each."""
    from faster_whisper import WhisperModel
    from openai import AsyncOpenAI

    from tests.speech_helpers import serve

    clips = [(folder / f"clip{i}.wav") for i in range(1 + len(CLIPS))]
    for path, text in zip(clips, (STORY, *CLIPS)):
        _espeak(text, path)
    engine = await _engine(folder, default_stt_model="whisper-base")
    model = engine.resolve_model("whisper-base", "stt")
    threads = engine.settings.threads or __import__("os").cpu_count()
    direct_model = WhisperModel(model.path, device="cpu", compute_type="int8", cpu_threads=threads)

    from engine.media.audio import decode, to_float
    # the very samples Confab's intake makes (they differ from faster-whisper's own decoding of
    # the file by a few least significant bits, which can change a beam search's path)
    samples = [to_float(decode(p.read_bytes(), 2**30, 3600, 60)) for p in clips]

    def direct(source) -> float:
        started = time.perf_counter()
        segments, info = direct_model.transcribe(source, beam_size=5, vad_filter=True,
                                                 temperature=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0))
        for _ in segments:
            pass
        return time.perf_counter() - started

    api_times, file_times, sample_times = [], [], []
    try:
        async with serve(engine) as base, AsyncOpenAI(base_url=base, api_key="x", max_retries=0,
                                                      timeout=600) as client:
            async def api(path: Path) -> float:
                started = time.perf_counter()
                await client.audio.transcriptions.create(model="whisper-1", file=(path.name, path.read_bytes()))
                return time.perf_counter() - started

            await api(clips[0])                   # warm: load and verify the model once
            await asyncio.to_thread(direct, str(clips[0]))
            for _ in range(REPEATS):              # interleaved, so load on the machine hits all alike
                api_times.append(sum([await api(p) for p in clips]))
                file_times.append(sum([await asyncio.to_thread(direct, str(p)) for p in clips]))
                sample_times.append(sum([await asyncio.to_thread(direct, x) for x in samples]))
    finally:
        await engine.close()
    seconds = sum(len(x) for x in samples) / 16000
    rows.append(("stt_api_over_direct", round(min(api_times) / min(file_times), 3),
                 f"whisper-base int8 beam 5 + VAD, {len(clips)} clips, {seconds:.0f} s in all, best of {REPEATS}: API "
                 f"{min(api_times):.2f} s, faster-whisper on the file {min(file_times):.2f} s "
                 f"(medians {statistics.median(api_times):.2f} / {statistics.median(file_times):.2f}); "
                 "goal <= 1.05"))
    rows.append(("stt_api_over_direct_samples", round(min(api_times) / min(sample_times), 3),
                 f"the same, faster-whisper given Confab's own 16 kHz samples: {min(sample_times):.2f} s "
                 f"(median {statistics.median(sample_times):.2f})"))
    rows.append(("stt_rtf_whisper_base", round(min(api_times) / seconds, 3),
                 f"compute s per audio s through the API, {seconds:.0f} s of speech"))


async def tts_rtf(folder: Path, rows: list) -> None:
    from engine import Origin
    from engine.work.speech import submit_speech
    engine = await _engine(folder)
    try:
        await (await submit_speech(engine, "Warm up.", Origin(), response_format="wav")).result()
        best, seconds = None, 0.0
        for _ in range(REPEATS):
            started = time.perf_counter()
            result = await (await submit_speech(engine, STORY, Origin(), response_format="wav")).result()
            took = time.perf_counter() - started
            best, seconds = min(best or took, took), result.duration_s
    finally:
        await engine.close()
    rows.append(("tts_rtf_piper_joe", round(best / seconds, 3),
                 f"compute s per audio s, {seconds:.0f} s of speech in {best:.2f} s "
                 f"({seconds / best:.0f}x real time)"))


async def voice_loop_ratio(folder: Path, rows: list, concurrency: int, stt: str = "whisper-base") -> None:
    from tests.conftest import chat_model_installed
    tag = "" if stt == "whisper-base" else "_" + stt.replace("whisper-", "")
    if not chat_model_installed():
        rows.append((f"voice_first_over_full_c{concurrency}{tag}", float("nan"), "no chat model installed"))
        return
    from voice.loop import FilePlayer, VoiceLoop
    question = _espeak(QUESTION, folder / "question.wav")
    engine = await _engine(folder, concurrency=concurrency, default_stt_model=stt,
                           voice_max_tokens=120)
    try:
        loop = VoiceLoop(engine, FilePlayer(), user="bench")
        await loop.turn(question)                 # warm: every model loaded
        ratios, firsts, fulls, audio_s, after_stt = [], [], [], [], []
        for i in range(LOOP_REPEATS):
            heard_at = []
            loop = VoiceLoop(engine, FilePlayer(), user=f"bench{i}",   # fresh memory each time
                             on_event=lambda ev: heard_at.append(time.monotonic())
                             if type(ev).__name__ == "Transcript" else None)
            started = time.monotonic()
            r = await loop.turn(question)
            if r.first_audio_s is None or r.full_audio_s is None:
                continue
            ratios.append(r.first_audio_s / r.full_audio_s)
            firsts.append(r.first_audio_s)
            fulls.append(r.full_audio_s)
            audio_s.append(r.audio.duration_s)
            stt_s = heard_at[0] - started if heard_at else 0.0
            after_stt.append((r.first_audio_s - stt_s) / (r.full_audio_s - stt_s))
    finally:
        await engine.close()
    if not ratios:
        rows.append((f"voice_first_over_full_c{concurrency}{tag}", float("nan"), "no answer audio"))
        return
    rows.append((f"voice_first_over_full_c{concurrency}{tag}", round(statistics.median(ratios), 3),
                 f"CONFAB_CONCURRENCY={concurrency}, {stt}; median of {len(ratios)} turns: first audio "
                 f"{statistics.median(firsts):.2f} s, full answer audio {statistics.median(fulls):.2f} s, "
                 f"{statistics.median(audio_s):.0f} s of speech; goal <= 0.35"))
    rows.append((f"voice_first_over_full_after_stt_c{concurrency}{tag}", round(statistics.median(after_stt), 3),
                 "the same, both times counted from the transcript (the answer's own streaming)"))


class _Rows(list):
    """Rows, printed as each is measured when run from the command line."""
    verbose = False

    def append(self, row) -> None:
        super().append(row)
        if self.verbose:
            name, value, note = row
            print(f"{name:<28} {value:>8}  {note}", flush=True)


async def _run_all(verbose: bool = False) -> list[tuple[str, float, str]]:
    rows = _Rows()
    rows.verbose = verbose
    with tempfile.TemporaryDirectory(prefix="confab-bench-speech-") as tmp:
        folder = Path(tmp)
        (folder / "models").mkdir()
        await transcription_ratio(folder, rows)
        await tts_rtf(folder, rows)
        await voice_loop_ratio(folder, rows, concurrency=2)
        await voice_loop_ratio(folder, rows, concurrency=2, stt="whisper-tiny.en")
        await voice_loop_ratio(folder, rows, concurrency=1)
    return list(rows)


def run() -> list[tuple[str, float, str]]:
    return asyncio.run(_run_all())


if __name__ == "__main__":
    import logging
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(_run_all(verbose=True))
