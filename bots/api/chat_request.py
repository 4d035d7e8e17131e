"""Reading a chat request in OpenAI's shape (messages, tools, sampling, stream), and what every
chat answer shares (its id, its usage, its stream of chunks), for the text and the image routes."""
from __future__ import annotations

from aiohttp import web

from bots.api.sse import stream_job
from bots.api.validate import limited_int, number, string
from engine.errors import BadRequest, PromptTooLong
from engine.jobs import ChatJob, ChatMessage, ChatResult, Origin, Token

ROLES = ("system", "developer", "user", "assistant", "tool")


def parse_messages(raw, max_chars: int) -> list[ChatMessage]:
    if not isinstance(raw, list) or not raw:
        raise BadRequest("'messages' must be a non-empty list.", param="messages")
    out, total = [], 0
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise BadRequest(f"messages[{i}] must be an object.", param=f"messages[{i}]")
        role = m.get("role")
        if role not in ROLES:
            raise BadRequest(f"messages[{i}].role must be one of {', '.join(ROLES)}.",
                             param=f"messages[{i}].role")
        content = m.get("content")
        if content is None:
            content = ""
        if isinstance(content, list):
            texts = []
            for part in content:
                if not isinstance(part, dict) or part.get("type") not in ("text", "image_url", "input_text"):
                    raise BadRequest(f"messages[{i}].content has a part Confab does not understand.",
                                     param=f"messages[{i}].content")
                if part["type"] == "image_url":
                    raise BadRequest("Image parts need a vision model, and none is installed. "
                                     "Pull one with `confab models pull llava-1.5-7b`.",
                                     param=f"messages[{i}].content")
                texts.append(str(part.get("text", "")))
            content = "\n".join(texts)
        if not isinstance(content, str):
            raise BadRequest(f"messages[{i}].content must be a string or a list of parts.",
                             param=f"messages[{i}].content")
        total += len(content)
        if total > max_chars:
            raise PromptTooLong("The prompt", total, max_chars, "characters")
        calls = m.get("tool_calls")
        if calls is not None and (role != "assistant" or not isinstance(calls, list) or not all(
                isinstance(c, dict) and isinstance(c.get("function"), dict)
                and isinstance(c["function"].get("name"), str) for c in calls)):
            raise BadRequest(f"messages[{i}].tool_calls must be a list of function calls on an "
                             "assistant message.", param=f"messages[{i}].tool_calls")
        call_id = m.get("tool_call_id")
        if role == "tool" and not isinstance(call_id, str):
            raise BadRequest(f"messages[{i}] is a tool message without its 'tool_call_id'.",
                             param=f"messages[{i}].tool_call_id")
        name = m.get("name") if isinstance(m.get("name"), str) else None
        out.append(ChatMessage("system" if role == "developer" else role, content,
                               calls or None, call_id if role == "tool" else None, name))
    return out


# Fields that would change the answer and that Confab does not do: refused, never ignored.
REFUSED = {
    "n": "An asynchronous job returns one choice; send n > 1 to /v1/chat/completions itself.",
    "logit_bias": "Confab does not apply 'logit_bias'.",
    "audio": "Chat answers come as text; ask /v1/audio/speech for audio.",
    "modalities": "Chat answers come as text only.",
    "prediction": "Confab does not take predicted outputs.",
    "web_search_options": "Confab does not search the web.",
    "functions": "The old 'functions' field is not served; send 'tools'.",
    "function_call": "The old 'function_call' field is not served; send 'tool_choice'.",
}
def parse_tools(body: dict) -> dict:
    """tools, tool_choice, parallel_tool_calls, response_format, logprobs and top_logprobs,
    checked as OpenAI checks them, for the runner."""
    options: dict = {}
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list) or not tools:
            raise BadRequest("'tools' must be a non-empty list of functions.", param="tools")
        for i, tool in enumerate(tools):
            fn = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(fn, dict) \
                    or not isinstance(fn.get("name"), str) or not fn["name"]:
                raise BadRequest(f"tools[{i}] must be {{\"type\": \"function\", \"function\": "
                                 f"{{\"name\": ...}}}}.", param=f"tools[{i}]")
            if fn.get("parameters") is not None and not isinstance(fn["parameters"], dict):
                raise BadRequest(f"tools[{i}].function.parameters must be a JSON schema object.",
                                 param=f"tools[{i}].function.parameters")
        options["tools"] = tools
    choice = body.get("tool_choice")
    if choice is not None:
        names = {t["function"]["name"] for t in tools or []}
        if isinstance(choice, str):
            if choice not in ("none", "auto", "required"):
                raise BadRequest("'tool_choice' must be none, auto, required or a named function.",
                                 param="tool_choice")
        elif not (isinstance(choice, dict) and choice.get("type") == "function"
                  and isinstance(choice.get("function"), dict)
                  and isinstance(choice["function"].get("name"), str)):
            raise BadRequest("'tool_choice' must be none, auto, required or "
                             "{\"type\": \"function\", \"function\": {\"name\": ...}}.", param="tool_choice")
        elif choice["function"]["name"] not in names:
            raise BadRequest(f"'tool_choice' names the function '{choice['function']['name']}', "
                             "which is not in 'tools'.", param="tool_choice")
        if tools is None and choice != "none":
            raise BadRequest("'tool_choice' needs 'tools'.", param="tool_choice")
        if tools is not None:
            options["tool_choice"] = choice
    parallel = body.get("parallel_tool_calls")
    if parallel is not None:
        if not isinstance(parallel, bool):
            raise BadRequest("'parallel_tool_calls' must be true or false.", param="parallel_tool_calls")
        if tools is not None:
            options["parallel_tool_calls"] = parallel
    fmt = body.get("response_format")
    if fmt is not None:
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        if kind == "json_schema":
            spec = fmt.get("json_schema")
            if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) \
                    or not isinstance(spec.get("schema", {}), dict):
                raise BadRequest("'response_format.json_schema' must have a 'name' and a 'schema' "
                                 "object.", param="response_format")
        elif kind not in ("text", "json_object"):
            raise BadRequest("'response_format.type' must be text, json_object or json_schema.",
                             param="response_format")
        if kind != "text":
            options["response_format"] = fmt
    logprobs = body.get("logprobs")
    if logprobs is not None and not isinstance(logprobs, bool):
        raise BadRequest("'logprobs' must be true or false.", param="logprobs")
    top = number(body, "top_logprobs", None, 0, 20, integer=True)
    if top is not None and not logprobs:
        raise BadRequest("'top_logprobs' needs 'logprobs': true.", param="top_logprobs")
    if logprobs:
        options["logprobs"] = True
        options["top_logprobs"] = top or 0
    return options


def parse_stream(body: dict) -> tuple[bool, dict]:
    """(stream or not, stream_options), refused as OpenAI refuses them when mistyped."""
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise BadRequest("'stream' must be true or false.", param="stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise BadRequest("'stream_options' must be an object.", param="stream_options")
    return bool(stream), options or {}


def parse_stop(body: dict) -> list[str] | None:
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and (not isinstance(stop, list) or len(stop) > 4
                             or not all(isinstance(s, str) for s in stop)):
        raise BadRequest("'stop' must be a string or a list of up to 4 strings.", param="stop")
    return stop


def parse_chat(body: dict, settings, origin: Origin) -> ChatJob:
    messages = parse_messages(body.get("messages"), settings.max_prompt_chars)
    for name, why in REFUSED.items():
        if body.get(name) is not None and not (name == "n" and body[name] == 1):
            raise BadRequest(why, param=name)
    stop = parse_stop(body)
    priority = body.get("priority")
    if priority is not None and (isinstance(priority, bool) or priority not in (0, 1, 2)):
        raise BadRequest("'priority' must be 0, 1 or 2.", param="priority")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise BadRequest("'seed' must be an integer.", param="seed")
    return ChatJob(
        model=string(body, "model", "") or "",
        origin=origin,
        priority=priority,
        messages=messages,
        max_tokens=limited_int(body, ("max_completion_tokens", "max_tokens"), settings.max_tokens),
        # a field not sent takes the model's own default (see engine/backends.model_sampling)
        temperature=number(body, "temperature", None, 0, 2),
        top_p=number(body, "top_p", None, 0, 1),
        top_k=number(body, "top_k", None, 0, 1000, integer=True),
        min_p=number(body, "min_p", None, 0, 1),
        stop=stop or [],
        presence_penalty=number(body, "presence_penalty", None, -2, 2),
        frequency_penalty=number(body, "frequency_penalty", None, -2, 2),
        repeat_penalty=number(body, "repeat_penalty", None, 0, 2),
        seed=seed,
        options=parse_tools(body),
    )


def completion_id(job_id: str) -> str:
    return "chatcmpl-" + job_id.removeprefix("job_")


def usage_dict(result: ChatResult) -> dict:
    u = result.usage
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
            "total_tokens": u.total_tokens}


async def stream_chat(request: web.Request, handle, headers: dict, include_usage: bool,
                      prefix: str = "") -> web.StreamResponse:
    """A chat answer as chat.completion.chunk events, `prefix` first (what an image answer says
    before the model's words); with `include_usage`, a last chunk carries the usage."""
    job = handle.job
    base = {"id": completion_id(handle.id), "object": "chat.completion.chunk",
            "created": int(job.created_at), "model": job.model, "system_fingerprint": None}

    def chunk(delta: dict, finish=None, logprobs=None) -> dict:
        data = {**base, "choices": [{"index": 0, "delta": delta,
                                     "logprobs": {"content": logprobs} if logprobs else None,
                                     "finish_reason": finish}]}
        if include_usage:
            data["usage"] = None   # as OpenAI: null on every chunk but the last, usage-only one
        return data

    def on_event(event):
        if isinstance(event, Token):
            delta: dict = {"content": event.text} if event.text or not event.tool_calls else {}
            if event.tool_calls:
                delta["tool_calls"] = event.tool_calls
            yield chunk(delta, logprobs=event.logprobs)

    def on_result(result: ChatResult):
        yield chunk({}, result.finish_reason)
        if include_usage:
            yield {**base, "choices": [], "usage": usage_dict(result)}

    first = [chunk({"role": "assistant", "content": ""})] + ([chunk({"content": prefix})] if prefix else [])
    return await stream_job(request, handle, headers, on_event=on_event, on_result=on_result, first=first)
