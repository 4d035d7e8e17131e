"""Chat as engine work: how a GGUF chat or vision model is loaded (a llama-server runner, or a
remote OpenAI engine), and how chat and completion jobs run on it."""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from engine.config import Settings
from engine.errors import BackendFailed, BackendMissing, BadRequest, PromptTooLong
from engine.jobs import ChatJob, ChatResult, CompletionJob, Token, Usage
from engine.work import chat_tools
from engine.work.chat_runner import ANSWER_ROOM_MIN, ChatRunner
from engine.work.registry import RunContext, cpu_threads, register_executor, register_loader
from models import gguf_meta, llama_runner, llava_vision
from models.registry import InstalledModel

log = logging.getLogger(__name__)


def chat_slots(settings: Settings, device: str) -> int:
    """Jobs a loaded chat model takes at once: the setting, or from the device: 4 on the CPU
    (8 on a GPU) for everyone, and the one the scheduler keeps for class 0 on top, so that
    ordinary traffic is batched as wide as llama.cpp's own server would batch it."""
    return settings.chat_slots or (9 if device == "cuda" else 5)


def model_sampling(model: InstalledModel, meta: dict, settings: Settings) -> dict:
    """The model's generation defaults: its card (the catalog), then its file's own
    `general.sampling.*`, then the operator's per-model overrides."""
    out = dict(model.options.get("sampling") or {})
    out.update(gguf_meta.sampling_defaults(meta))
    out.update(settings.sampling_overrides(model.name))
    return out


def runner_size(model: InstalledModel, meta: dict, settings: Settings, slots: int) -> int:
    """Bytes a runner takes: weights (and projector), KV cache for its context in every slot,
    its prompt cache."""
    kv = gguf_meta.kv_bytes_per_token(meta) * settings.context_tokens * slots
    return model.size + kv + settings.prompt_cache_mb * 2**20


def gguf_metadata(model: InstalledModel) -> dict:
    try:
        return gguf_meta.read_metadata(gguf_file(model))
    except (OSError, gguf_meta.GGUFError) as e:
        raise BackendFailed(f"The model file of '{model.name}' cannot be read: {e}") from None


def gguf_file(model: InstalledModel) -> str:
    if model.fmt == "llava-gguf":
        return vision_files(model)[0]
    path = Path(model.path)
    if path.is_dir():
        files = sorted(path.glob("*.gguf"))
        main = [f for f in files if "mmproj" not in f.name] or files
        return str(main[0]) if main else str(path)
    return str(path)


def vision_files(model: InstalledModel) -> tuple[str, str]:
    """(language model, projector) of a vision model folder."""
    try:
        return llava_vision.split_files(model.path)
    except ValueError as e:
        raise BackendFailed(f"The vision model '{model.name}' is incomplete: {e}") from None


@register_loader("gguf", budget_aware=True, library="llama-server")
@register_loader("llava-gguf", budget_aware=True)
def load_gguf(model: InstalledModel, device: str, settings: Settings, room: int | None = None):
    """A chat (or vision: model + projector) GGUF, served by a runner of its own."""
    try:
        binary = llama_runner.find_binary()
    except llama_runner.RunnerError as e:
        raise BackendMissing("llama-server", "chat", detail=str(e)) from None
    meta = gguf_metadata(model)
    slots = chat_slots(settings, device)
    kv_slot = gguf_meta.kv_bytes_per_token(meta) * settings.context_tokens
    if room is not None and kv_slot:
        # capped by the memory budget: as many slots as the room left beside the weights holds
        fit = (room - model.size - settings.prompt_cache_mb * 2**20) // kv_slot
        slots = max(1, min(slots, int(fit)))
    slot_dir = settings.data_path / "slots" / model.name
    slot_dir.mkdir(parents=True, exist_ok=True)
    text, mmproj = vision_files(model) if model.fmt == "llava-gguf" else (gguf_file(model), "")
    # its LoRA adapters (each file once), loaded but applied to no request unless it names one
    adapters = {a["path"]: a["size"] for a in model.options.get("adapters") or []}
    lora = [arg for path in adapters for arg in ("--lora", path)]
    spec = llama_runner.RunnerSpec(
        text, slots=slots, context_per_slot=settings.context_tokens,
        threads=cpu_threads(settings), gpu_layers=999 if device == "cuda" else 0,
        mmproj=mmproj, slot_dir=str(slot_dir), prompt_cache_mb=settings.prompt_cache_mb,
        extra=lora + ["--lora-init-without-apply"] if lora else [])
    log_dir = settings.data_path / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    llama_runner.sweep_dead_runner_folders()
    process = llama_runner.RunnerProcess(spec, binary, log_dir=str(log_dir))
    try:
        process.start()
        _, props = llama_runner.unix_request(process.socket_path, "GET", "/props", timeout=10)
    except (llama_runner.RunnerError, OSError) as e:
        process.stop()
        raise BackendFailed(f"The chat model '{model.name}' could not start: {e}") from None
    caps = props.get("chat_template_caps") or {}
    return ChatRunner(model.name, process=process, slots=slots, n_ctx=settings.context_tokens,
                      defaults=model_sampling(model, meta, settings), slot_dir=str(slot_dir),
                      size_bytes=runner_size(model, meta, settings, slots) + sum(adapters.values()),
                      template_tools=bool(caps.get("supports_tool_calls")), adapters=list(adapters))


@register_loader("remote-openai")
def load_remote(model: InstalledModel, device: str, settings: Settings):
    """A chat model served by an OpenAI-compatible engine elsewhere (vLLM, llama.cpp, Ollama)."""
    return ChatRunner(model.name, base_url=model.path, api_key=settings.remote_chat_key,
                      remote_model=model.options.get("remote_model", model.name),
                      slots=chat_slots(settings, device), n_ctx=settings.context_tokens,
                      defaults=settings.sampling_overrides(model.name))


def holds_adapter(instance: Any, adapter: InstalledModel) -> bool:
    """Whether a loaded base can apply `adapter` (a runner started before it was added cannot)."""
    held = getattr(instance, "adapters", None)
    return held is None or adapter.path in held


def lora_field(runner: ChatRunner, adapter: InstalledModel | None) -> list[dict] | None:
    """A request's `lora`: the named adapter at its scale, every other at 0. Requests for the
    base say so too: llama.cpp keeps a slot's cached prefix when a request names no adapters,
    and that prefix may have been computed with one."""
    if not runner.adapters:
        return None
    path = adapter.path if adapter is not None else None
    scale = float(adapter.options.get("scale", 1.0)) if adapter is not None else 0.0
    return [{"id": i, "scale": scale if p == path else 0.0} for i, p in enumerate(runner.adapters)]


def conversation_key(job: ChatJob) -> str:
    """The conversation a job continues, for its slot: the door's thread, or for the API the
    request's first messages (a client that resends a growing history keeps its prefix)."""
    if job.conversation:
        return job.conversation
    o = job.origin
    if o.platform != "api" and (o.channel or o.thread):
        return f"{o.platform}:{o.channel}:{o.thread or o.user}"
    head = json.dumps([[m.role, m.content] for m in job.messages[:2]])
    return "api:" + hashlib.sha256(f"{job.model}\n{head}".encode()).hexdigest()[:24]


def _tool_options(runner: ChatRunner, job: ChatJob,
                  messages: list[dict]) -> tuple[dict, chat_tools.Emulated | None]:
    """The OpenAI options as the runner gets them, with tools emulated where the model's
    template has none (see engine/work/chat_tools.py)."""
    options = dict(job.options)
    tools = options.get("tools")
    choice = options.get("tool_choice")
    if not tools:
        return options, None
    if runner.template_tools:
        if isinstance(choice, dict):   # a named function: only that one, and it must be called
            name = choice.get("function", {}).get("name")
            options["tools"] = [t for t in tools if (t.get("function") or {}).get("name") == name]
            options["tool_choice"] = "required"
        return options, None
    for key in ("tools", "tool_choice", "parallel_tool_calls"):
        options.pop(key, None)
    emulated = chat_tools.emulate(tools, choice, job.options.get("parallel_tool_calls", True) is not False)
    if emulated is None:
        return options, None
    if "response_format" in options:
        raise BadRequest(f"The model '{job.model}' has no tool support of its own, so Confab "
                         "constrains its answer to call the tools; it cannot also follow "
                         "'response_format'. Send one of the two.", param="response_format")
    if messages and messages[0]["role"] == "system":
        messages[0] = dict(messages[0], content=f"{messages[0]['content']}\n\n{emulated.system}")
    else:
        messages.insert(0, {"role": "system", "content": emulated.system})
    options["response_format"] = {"type": "json_schema",
                                  "json_schema": {"name": "reply", "schema": emulated.schema}}
    return options, emulated


@register_executor("chat", "chat", on_loop=True)
async def run_chat(runner: ChatRunner, job: ChatJob, ctx: RunContext) -> ChatResult:
    messages = [m.wire() for m in job.messages]
    if not runner.template_tools:   # its template would refuse them: say what they were
        messages = [_plain(m) for m in messages]
    options, emulated = _tool_options(runner, job, messages)
    max_tokens = job.max_tokens or ctx.settings.max_tokens
    messages, dropped, prompt_tokens, max_tokens = await runner.fit(messages, max_tokens,
                                                                    options.get("tools"))
    payload = {"messages": messages, "max_tokens": max_tokens, **runner.sampling(job), **options}
    if job.stop:
        payload["stop"] = list(job.stop)
    lora = lora_field(runner, ctx.adapter)
    if lora is not None:
        payload["lora"] = lora
    # a slot's prefix is computed with its adapter: a conversation's is kept per adapter
    key = conversation_key(job) + (f"@{ctx.adapter.name}" if ctx.adapter else "")
    slot, restore = runner.take_slot(key)
    finished = False
    try:
        if restore:
            await runner.restore(slot)

        def on_delta(delta: dict, logprobs: dict | None) -> None:
            if emulated is not None:   # the constrained JSON is read back at the end
                return
            text = delta.get("content") or ""
            if text or logprobs or delta.get("tool_calls"):
                ctx.emit(Token(text, delta.get("tool_calls"), (logprobs or {}).get("content")))

        out = await runner.generate(payload, slot, on_delta, ctx.cancelled)
        finished = out.finish_reason != "cancelled"
    finally:
        # a generation cut short leaves a prefix the next turn of this conversation will not share
        runner.give_back(slot, keep=finished)
    text, calls, finish = out.text, out.tool_calls, out.finish_reason
    if emulated is not None and finished:
        try:
            answer, calls = chat_tools.read_back(out.text)
        except chat_tools.Unfinished:
            raise BadRequest(f"The tool call did not fit in max_tokens ({max_tokens}): the model "
                             f"stopped after {out.completion_tokens} tokens, before its call was "
                             "complete. Send a larger max_tokens.", param="max_tokens") from None
        text = answer or ""
        if calls:
            finish = "tool_calls"
            ctx.emit(Token("", [dict(c, index=i) for i, c in enumerate(calls)]))
        elif text:
            ctx.emit(Token(text))
    return ChatResult(text, finish, Usage(out.prompt_tokens or prompt_tokens, out.completion_tokens),
                      job.model, dropped, calls, out.logprobs or None)


@register_executor("completion", "chat", on_loop=True)
async def run_completion(runner: ChatRunner, job: CompletionJob, ctx: RunContext) -> ChatResult:
    """A raw prompt continued (no chat template): nothing to trim, so a prompt too long is refused."""
    prompt_tokens = await runner.count_text(job.prompt + (job.suffix or ""))
    room = runner.n_ctx - prompt_tokens
    if room < ANSWER_ROOM_MIN:
        raise PromptTooLong("The prompt", prompt_tokens, runner.n_ctx - ANSWER_ROOM_MIN, "tokens")
    max_tokens = min(job.max_tokens or ctx.settings.max_tokens, room)
    payload = {"prompt": job.prompt, "max_tokens": max_tokens, **runner.sampling(job)}
    if job.suffix is not None:
        payload["suffix"] = job.suffix
    if job.logprobs is not None:
        payload["logprobs"] = job.logprobs
    if job.stop:
        payload["stop"] = list(job.stop)
    lora = lora_field(runner, ctx.adapter)
    if lora is not None:
        payload["lora"] = lora
    slot, _ = runner.take_slot("")
    finished = False
    try:
        def on_delta(delta: dict, logprobs: dict | None) -> None:
            text = delta.get("content") or ""
            if text or logprobs:
                ctx.emit(Token(text, None, (logprobs or {}).get("content")))

        out = await runner.generate(payload, slot, on_delta, ctx.cancelled, path="/v1/completions")
        finished = out.finish_reason != "cancelled"
    finally:
        runner.give_back(slot, keep=finished)
    return ChatResult(out.text, out.finish_reason,
                      Usage(out.prompt_tokens or prompt_tokens, out.completion_tokens),
                      job.model, 0, [], out.logprobs or None)


def _plain(message: dict) -> dict:
    """A tool-call turn or tool result as text, for a template that knows neither."""
    if message.get("tool_calls"):
        calls = "; ".join(f"{c['function']['name']}({c['function'].get('arguments', '')})"
                          for c in message["tool_calls"] if isinstance(c, dict) and c.get("function"))
        return {"role": "assistant", "content": (message.get("content") or "") + f"[called {calls}]"}
    if message["role"] == "tool":
        return {"role": "user", "content": f"[result of {message.get('name') or 'the tool'}]: "
                                           f"{message.get('content', '')}"}
    return {"role": message["role"], "content": message.get("content") or ""}
