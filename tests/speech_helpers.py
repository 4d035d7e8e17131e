"""Helpers for the speech tests: real speech from espeak-ng, formats through ffmpeg, word error
rate, a tiny random-weight Bark of the real architecture, and an engine on loopback."""
from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest

requires_speech_tools = pytest.mark.skipif(
    not (shutil.which("ffmpeg") and shutil.which("espeak-ng")),
    reason="ffmpeg and espeak-ng (Debian packages) are needed for speech tests")


def espeak(text: str, path: Path, speed: int = 150) -> Path:
    """A WAV of `text` spoken by espeak-ng (22.05 kHz mono)."""
    subprocess.run(["espeak-ng", "-s", str(speed), "-w", str(path), text], check=True, timeout=30)
    return path


def convert(src: Path, dst: Path, *args: str) -> Path:
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-i", str(src), *args, str(dst)],
                   check=True, timeout=30)
    return dst


def probe_seconds(data: bytes, fmt_args: tuple[str, ...] = ()) -> float:
    """Duration of encoded audio, decoded back by ffmpeg."""
    out = subprocess.run(["ffmpeg", "-loglevel", "error", *fmt_args, "-i", "pipe:0", "-f", "s16le",
                          "-ac", "1", "-ar", "16000", "pipe:1"], input=data, capture_output=True,
                         timeout=30, check=True).stdout
    return len(out) / 2 / 16000


NUMBER_WORDS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
                "fourteen fifteen sixteen seventeen eighteen nineteen twenty").split()


def words(text: str) -> list[str]:
    """Lower-case words, small numbers spelt out: Whisper writes "at 9" for a spoken "at nine"."""
    found = re.findall(r"[a-z0-9']+", text.lower().replace("-", " "))
    return [NUMBER_WORDS[int(w)] if w.isdigit() and int(w) < len(NUMBER_WORDS) else w for w in found]


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate: word-level edit distance over the reference's length."""
    ref, hyp = words(reference), words(hypothesis)
    d = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, d[0] = d[0], i
        for j, h in enumerate(hyp, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (r != h))
    return d[len(hyp)] / max(1, len(ref))


def build_tiny_bark(folder: Path, max_semantic_tokens: int = 24) -> Path:
    """A Bark model of the real architecture (semantic, coarse, fine, EnCodec) with random
    weights and a tiny tokenizer, saved as `save_pretrained` saves the real one."""
    import torch
    from transformers import (
        BarkCoarseConfig,
        BarkConfig,
        BarkFineConfig,
        BarkModel,
        BarkProcessor,
        BarkSemanticConfig,
        BertTokenizerFast,
        EncodecConfig,
        GenerationConfig,
    )
    from transformers.models.bark.generation_configuration_bark import (
        BarkCoarseGenerationConfig,
        BarkFineGenerationConfig,
        BarkGenerationConfig,
        BarkSemanticGenerationConfig,
    )
    torch.manual_seed(0)
    small = dict(block_size=1024, num_layers=1, num_heads=2, hidden_size=16)
    config = BarkConfig(
        semantic_config=BarkSemanticConfig(input_vocab_size=129600, output_vocab_size=10048, **small).to_dict(),
        coarse_acoustics_config=BarkCoarseConfig(input_vocab_size=12096, output_vocab_size=12096, **small).to_dict(),
        fine_acoustics_config=BarkFineConfig(input_vocab_size=1056, output_vocab_size=1056, n_codes_total=8,
                                             n_codes_given=1, **small).to_dict(),
        codec_config=EncodecConfig(num_filters=4, hidden_size=16, codebook_size=1024,
                                   num_lstm_layers=1).to_dict())
    model = BarkModel(config)
    generation = BarkGenerationConfig.from_sub_model_configs(
        BarkSemanticGenerationConfig(max_new_tokens=max_semantic_tokens),
        BarkCoarseGenerationConfig(max_coarse_history=60, sliding_window_len=30),
        BarkFineGenerationConfig())
    model.generation_config = GenerationConfig(**generation.to_dict())
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("abcdefghijklmnopqrstuvwxyz.,!?'")
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BarkProcessor(BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))).save_pretrained(folder)
    return folder


@contextlib.asynccontextmanager
async def serve(engine):
    """The engine's HTTP API on 127.0.0.1, port 0; yields the base URL."""
    from aiohttp import web

    from bots.api.app import create_app
    runner = web.AppRunner(create_app(engine))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()
