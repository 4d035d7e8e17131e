"""Console speech commands on the shared command set: /transcribe PATH, /speak TEXT, /voicenote PATH."""
from __future__ import annotations

import asyncio
import io

import pytest
import pytest_asyncio

from bots import adapters
from bots.common.commands import Commands, Request
from bots.console.console import ConsoleReply
from engine import Engine, Origin
from tests.conftest import make_settings, requires_chat_model
from tests.speech_helpers import espeak, probe_seconds, requires_speech_tools, wer

pytestmark = [requires_speech_tools, requires_chat_model, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def commands(tmp_path_factory, shared_models_dir):
    engine = Engine(make_settings(tmp_path_factory.mktemp("data"), shared_models_dir,
                                  default_stt_model="whisper-tiny.en", voice_max_tokens=30))
    await engine.start(resume=False)
    cmds = Commands(engine)
    adapters.extend_commands(cmds)
    yield cmds
    await engine.close()


async def run(cmds: Commands, text: str, tmp_path, platform: str = "console") -> tuple[str, ConsoleReply]:
    out = io.StringIO()
    reply = ConsoleReply(out, tmp_path / "files")
    origin = Origin(platform=platform, user="me", is_dm=True)
    await asyncio.wait_for(cmds.handle(Request(origin, f"{platform}:me", text), reply), 180)
    return out.getvalue(), reply


async def test_transcribe_a_file(commands, tmp_path):
    path = espeak("Our new office opens next month.", tmp_path / "note.wav")
    said, _ = await run(commands, f"/transcribe {path}", tmp_path)
    assert said.startswith("📝 ") and wer("Our new office opens next month.", said[2:]) <= 0.3


async def test_speak_sends_a_voice_file(commands, tmp_path):
    said, _ = await run(commands, "/speak Good morning, team! The build is green.", tmp_path)
    files = list((tmp_path / "files").iterdir())
    assert [f.name for f in files] == ["speech.ogg"] and "saved to" in said
    assert probe_seconds(files[0].read_bytes()) > 1.0


async def test_voicenote_answers_in_text_and_aloud(commands, tmp_path):
    path = espeak("What is the capital of France?", tmp_path / "q.wav")
    said, _ = await run(commands, f"/voicenote {path}", tmp_path)
    assert "🎙️ What is the capital" in said
    assert (tmp_path / "files" / "answer.ogg").exists()


async def test_bad_audio_gets_words_not_a_crash(commands, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a recording\n" * 30)
    said, _ = await run(commands, f"/transcribe {path}", tmp_path)
    assert said.startswith("🎧 ") and "not audio" in said


async def test_chat_platforms_cannot_read_server_files(commands, tmp_path):
    said, _ = await run(commands, "/transcribe /etc/passwd", tmp_path, platform="slack")
    assert "Attach the recording" in said
