"""The OpenAPI fuzzing of test_fuzz.py on the real path: schemathesis against OpenAI's own
document, the generated requests sent to Confab with the real SmolLM2 runner (llama-server) and
the real Whisper, not the stand-in model. Each generated request names the real model (and a
transcription carries real speech), so that what the generator varies (messages, sampling,
tools, response formats, n, stop, logprobs; language, prompt, temperature, formats) reaches the
runner and Whisper. No 5xx, errors in OpenAI's shape, and the server and its runner stay up.
Bounded: a few cases per operation, derandomized, and answers of at most 48 tokens."""
from __future__ import annotations

import asyncio

import pytest

from bots.api.app import create_app
from engine import Engine
from tests.api.test_fuzz import LiveConfab, openai_document
from tests.conftest import CHAT_MODEL, make_settings, requires_chat_model
from tests.ops_helpers import serve
from tests.speech_helpers import espeak, requires_speech_tools

pytestmark = [requires_chat_model, pytest.mark.ops, pytest.mark.timeout(600)]

EXAMPLES = 16          # generated cases per operation (about one in four of the chat cases is valid
                       # all through, and runs the model; the rest are refused by name)
CONTENT_TYPES = ("application/json", "text/event-stream", "text/plain", "text/vtt", "")


class RealConfab(LiveConfab):
    """LiveConfab on the real engine: SmolLM2 in its runner, Whisper tiny.en."""

    def __init__(self, tmp_path, models_dir):
        super().__init__(tmp_path)
        self.models_dir = models_dir

    async def _start(self):
        # The operator's cap on answers (CONFAB_MAX_TOKENS) keeps each case short: a generated
        # max_tokens above it is refused by name (a 4xx, also a path worth fuzzing), one below
        # it is generated as asked. Whisper tiny.en, the fast one, for the transcriptions.
        engine = Engine(make_settings(self.tmp_path, self.models_dir, max_tokens=48, threads=2,
                                      default_stt_model="whisper-tiny.en", max_body_bytes=2 * 2**20,
                                      max_audio_bytes=2 * 2**20), gpu_total=None)
        await engine.start(resume=False)
        self.app = create_app(engine)
        runner, base = await serve(self.app)
        return engine, runner, base

    def runner_pid(self) -> int | None:
        runner = self.engine.models.instance_of(CHAT_MODEL)
        return runner.process.pid if runner is not None else None


@pytest.fixture(scope="module")
def real(tmp_path_factory, shared_models_dir):
    with RealConfab(tmp_path_factory.mktemp("fuzz-real"), shared_models_dir) as confab:
        yield confab


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> bytes:
    return espeak("The quick brown fox jumps over the lazy dog.", tmp_path_factory.mktemp("speech") / "q.wav").read_bytes()


def fuzz(real, path: str, method: str, aim) -> list[int]:
    """Run `EXAMPLES` generated cases of one operation, each changed by `aim` to take the real
    path; returns their statuses and fails on any 5xx or malformed error."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    doc = openai_document()
    doc["servers"] = [{"url": f"{real.base}/v1"}]
    operation = schemathesis.openapi.from_dict(doc)[path][method]
    problems, statuses = [], []

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy())
    def run(case):
        if not isinstance(case.body, dict):
            return
        aim(case.body)
        response = case.call(base_url=f"{real.base}/v1", timeout=180)
        statuses.append(response.status_code)
        if response.status_code >= 500:
            problems.append((response.status_code, {k: v for k, v in case.body.items() if k != "file"},
                             response.text[:300]))
            return
        assert response.headers.get("Content-Type", "").split(";")[0] in CONTENT_TYPES, response.headers
        if response.status_code >= 400:
            error = response.json()["error"]
            assert error["message"] and error["type"], error

    run()
    assert not problems, problems[:3]
    assert real.healthy()
    return statuses


def test_generated_chat_requests_on_the_real_runner(real):
    def aim(body):
        body["model"] = CHAT_MODEL
    assert asyncio.run_coroutine_threadsafe(_ask(real), real.loop).result(180)    # loaded
    pid = real.runner_pid()
    statuses = fuzz(real, "/chat/completions", "post", aim)
    assert 200 in statuses, statuses          # some went all the way through the model
    # the runner survived it all: the same process answers a plain question
    assert asyncio.run_coroutine_threadsafe(_ask(real), real.loop).result(180)
    assert real.runner_pid() == pid


@requires_speech_tools
def test_generated_transcriptions_on_the_real_whisper(real, speech):
    def aim(body):
        body["file"] = speech
        body["model"] = "whisper-1"
    statuses = fuzz(real, "/audio/transcriptions", "post", aim)
    assert 200 in statuses, statuses


async def _ask(real) -> str:
    from engine import ChatJob, ChatMessage
    handle = await real.engine.submit(ChatJob(model=CHAT_MODEL, max_tokens=8, temperature=0,
                                              messages=[ChatMessage("user", "Say hello.")]))
    return (await asyncio.wait_for(handle.result(), 120)).text
