"""The command set every adapter shares: /ask, /queue, /cancel, /models, /help and friends.

An adapter turns a platform event into `Request` (who, where, which conversation, what text)
and a `Reply` (how to answer there), then calls `Commands.handle` with a typed line, or
`Commands.run` with a `Call` whose options the platform gave typed (a Discord slash command's);
a line ends there too, parsed. Modalities add commands with `Commands.register`; a handler takes
a command's typed options as keyword arguments.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Mapping

from bots.common.channels import load_channels
from bots.common.render import tokens_of
from bots.common.reply import Reply
from bots.common.words import HELP
from engine import ChatJob, ChatMessage, ConfabError, Engine, Origin, UserError
from engine.flows.voice_note import messages_with
from engine.messages import explain

log = logging.getLogger(__name__)


@dataclass
class Request:
    origin: Origin
    conversation: str              # key of the conversation's memory in the store
    text: str = ""
    attachments: list = field(default_factory=list)
    history: list[tuple[str, str]] | None = None   # given by adapters that read it from the platform


@dataclass(frozen=True)
class Call:
    """A command and its arguments: `arg`, the free text after its name; `options`, arguments
    a platform gave typed, passed to the handler by keyword (/translate's `languages`)."""
    name: str
    arg: str = ""
    options: Mapping[str, str] = field(default_factory=dict)


Handler = Callable[..., Awaitable[None]]     # (commands, request, arg, reply, **options)


def parse(text: str) -> Call:
    """Call('ask', 'rest') from '/ask rest'; plain text is a question."""
    stripped = text.strip()
    if stripped.startswith("/") and len(stripped) > 1:
        name, _, rest = stripped[1:].partition(" ")
        return Call(name.lower(), rest.strip())
    return Call("ask", stripped)


class Commands:
    def __init__(self, engine: Engine):
        self.engine = engine
        self.handlers: dict[str, Handler] = dict(BUILTIN)
        self.channels = load_channels(getattr(engine.settings, "channels_file", ""))

    def model_for(self, request: Request, kind: str, template: str = "") -> str:
        """The channel's (or the template's) model for `kind`, "" for the engine's default."""
        return self.channels.model_for(kind, request.origin.platform, request.origin.channel, template)

    def register(self, name: str, handler: Handler) -> None:
        self.handlers[name] = handler

    async def handle(self, request: Request, reply: Reply) -> None:
        """The command in a typed line (`request.text`)."""
        await self.run(request, parse(request.text), reply)

    async def run(self, request: Request, call: Call, reply: Reply) -> None:
        handler = self.handlers.get(call.name)
        if handler is None:
            await reply.private(f"I don't know the command /{call.name}. Try /help.")
            return
        try:
            await handler(self, request, call.arg, reply, **call.options)
        except ConfabError as e:
            await reply.say(explain(e))
        except Exception as e:  # a bug of ours: say so, log it, keep the adapter alive
            log.exception("command /%s failed", call.name)
            await reply.say(explain(e))

    # -- shared steps -----------------------------------------------------------------------

    async def conversation_messages(self, request: Request, question: str) -> list[ChatMessage]:
        """The one chat context of every door: the conversation's memory (what the door read
        from the platform, else the store's) under the system prompt, then the question."""
        settings = self.engine.settings
        history = request.history
        if history is None:
            history = await self.engine.history(request.conversation, settings.history_messages)
        return messages_with(settings.system_prompt, history[-settings.history_messages:])(question)

    async def answer(self, request: Request, question: str, reply: Reply, model: str = "") -> str:
        """Ask the chat model within the conversation, stream the answer, remember both turns."""
        if not question:
            raise UserError("Ask me something after the command, like: /ask what is a GGUF file?")
        messages = await self.conversation_messages(request, question)
        model = model or self.model_for(request, "chat")
        handle = await self.engine.submit(ChatJob(model=model, origin=request.origin, messages=messages,
                                                  conversation=request.conversation))
        text = await reply.stream(tokens_of(handle), status=f"queued ({handle.id})")
        result = await handle.result()   # raises the job's error, if it failed
        await self.engine.remember_exchange(request.conversation, question, result.text)
        return text


# -- the built-in commands ------------------------------------------------------------------

async def cmd_ask(cmds: Commands, request: Request, arg: str, reply: Reply) -> None:
    await cmds.answer(request, arg, reply)


async def cmd_translate(cmds: Commands, request: Request, arg: str, reply: Reply, languages: str = "") -> None:
    """Until the writing templates are registered (bots/skills.py): the chat model asked."""
    if languages:
        arg = f"Translate into {languages}, and answer with the translation only: {arg}"
    await cmds.answer(request, arg, reply)


async def cmd_help(cmds: Commands, request: Request, arg: str, reply: Reply) -> None:
    await reply.private(HELP)


async def cmd_models(cmds: Commands, request: Request, arg: str, reply: Reply) -> None:
    engine = cmds.engine
    engine.refresh_models()
    loaded = set(engine.dispatcher.resident_names())
    lines = ["Installed models:"]
    for m in sorted(engine.installed(), key=lambda m: (m.kind, m.name)):
        mark = " (loaded)" if m.name in loaded else ""
        lines.append(f"  {m.kind:<9} {m.name}{mark}")
    if len(lines) == 1:
        lines.append("  none — run `confab models list` on the server")
    await reply.private("\n".join(lines))


async def cmd_queue(cmds: Commands, request: Request, arg: str, reply: Reply) -> None:
    engine = cmds.engine
    mine = engine.jobs_of(request.origin.user_key)
    if not mine:
        await reply.private(f"You have no jobs waiting or running. "
                            f"{len(engine.dispatcher.waiting)} in the queue overall.")
        return
    lines = ["Your jobs:"]
    for h in mine:
        if h.status == "running":
            lines.append(f"  {h.id}  {h.job.kind} on {h.job.model}: running")
        else:
            where = engine.position(h.id)
            pos = f"#{where[0]} in line, starts in about {where[1]:.0f} s" if where else "starting"
            lines.append(f"  {h.id}  {h.job.kind} on {h.job.model}: {pos}")
    await reply.private("\n".join(lines))


async def cmd_cancel(cmds: Commands, request: Request, arg: str, reply: Reply) -> None:
    engine = cmds.engine
    mine = engine.jobs_of(request.origin.user_key)
    if arg:
        target = engine.handle(arg)
        if target is None or target.done:
            await reply.private(f"There is no job {arg} waiting or running.")
            return
        if target.job.origin.user_key != request.origin.user_key and not request.origin.is_admin:
            await reply.private("That job is not yours to cancel.")
            return
    elif mine:
        target = mine[-1]
    else:
        await reply.private("You have nothing to cancel.")
        return
    await target.cancel()
    await reply.private(f"Cancelled {target.id}.")


async def cmd_reset(cmds: Commands, request: Request, arg: str, reply: Reply) -> None:
    await cmds.engine.store.clear_conversation(request.conversation)
    await reply.private("I have forgotten this conversation.")


def _not_yet(what: str, extra: str, pull: str = ""):
    async def handler(cmds: Commands, request: Request, arg: str, reply: Reply) -> None:
        hint = f" then `confab models pull {pull}`" if pull else ""
        await reply.say(f"🧩 {what} is not installed on this Confab yet. An admin can add it with "
                        f"`pip install 'confab-bot[{extra}]'`{hint}.")
    return handler


BUILTIN: dict[str, Handler] = {
    "ask": cmd_ask,
    "help": cmd_help,
    "models": cmd_models,
    "queue": cmd_queue,
    "cancel": cmd_cancel,
    "reset": cmd_reset,
    "imagine": _not_yet("Image generation", "images", "sdxl-turbo"),
    "speak": _not_yet("Speech", "speech"),
    "transcribe": _not_yet("Transcription", "speech"),
    "translate": cmd_translate,
}
