"""Typed values across processes: what the Redis queue carries comes back as the same types,
and nothing outside Confab's packages is ever rebuilt from the wire."""
from __future__ import annotations

import json

import pytest

from engine import wire
from engine.errors import JobTimeout, PromptTooLong, UnknownModel
from engine.jobs import ChatJob, ChatMessage, ChatResult, Origin, Started, Token, Usage
from engine.work.speech import SpeakJob


def test_jobs_events_and_results_round_trip():
    job = ChatJob(model="m", origin=Origin(platform="slack", user="U1", is_dm=True),
                  messages=[ChatMessage("user", "hi")], stop=["\n"], seed=7, meta={"reply": {"c": 1}})
    back = wire.loads(wire.dumps(job))
    assert back == job and isinstance(back.origin, Origin) and isinstance(back.messages[0], ChatMessage)
    assert wire.loads(wire.dumps(Token("x"))) == Token("x")
    assert wire.loads(wire.dumps(Started("m", "cuda"))) == Started("m", "cuda")
    result = ChatResult("hello", "stop", Usage(3, 4), "m")
    assert wire.loads(wire.dumps(result)) == result
    assert wire.loads(wire.dumps({"audio": b"\x00\xff", "pair": (1, 2)})) == {"audio": b"\x00\xff", "pair": (1, 2)}


def test_errors_keep_their_class_words_and_data():
    for error in (JobTimeout(30), UnknownModel("x", "chat", ["a"]), PromptTooLong("The prompt", 900, 512, "tokens")):
        back = wire.loads(wire.dumps(error))
        assert type(back) is type(error)
        assert back.message == error.message and vars(back) == vars(error)


def test_types_from_elsewhere_are_refused():
    evil = json.dumps({"__type__": "os:system", "fields": {}})
    with pytest.raises(wire.WireError):
        wire.loads(evil)
    with pytest.raises(wire.WireError):
        wire.loads(json.dumps({"__error__": "subprocess:CalledProcessError", "message": "x"}))
    with pytest.raises(wire.WireError):     # a Confab module, but not a dataclass
        wire.loads(json.dumps({"__type__": "engine.runtime.engine:Engine", "fields": {}}))


def test_a_job_queued_by_an_older_confab_is_rebuilt_after_an_upgrade():
    job = SpeakJob(model="piper-joe", origin=Origin(platform="api", user="k"), text="hello")
    queued_before = wire.dumps(job).replace("engine.work.speech:", "engine.speech:")
    assert "engine.speech:SpeakJob" in queued_before
    assert wire.loads(queued_before) == job
