"""The writing templates as chat commands in every adapter: /translate, /promo, /write.

    /translate fr,de: Hello, how are you?      one answer per language, in one request
    /translate Bonjour                         into English
    /promo                                     asks for its slots (a modal, or console prompts)
    /promo product=Lemonade; size=330 ml; container=can; price=$1.50; store=kiosk; setting=beach; output=both
    /write story a lighthouse keeper's cat

Slots a command does not give are collected through the reply, when it can (bots/common/reply.py):
    FillsForm: reply.form(template, values) -> dict | None   a modal (None: cancelled)
    AsksLine:  reply.ask(prompt) -> str | None               one line from the console (None: cancelled)
and otherwise the command says which slots to give.
"""
from __future__ import annotations

from typing import AsyncIterator

from bots.common.commands import Commands, Request
from bots.common.image_commands import ImagineSpec, run_imagine
from bots.common.render import tokens_of
from bots.common.reply import AsksLine, FillsForm, Reply
from engine import ChatJob, UserError
from engine.flows import templates as T
from engine.flows.templates import Part, Template


async def run_parts(cmds: Commands, request: Request, template: Template, parts: list[Part],
                    reply: Reply) -> list[str]:
    """Each part as a chat job, streamed into the reply under its label when there are several."""
    out = []
    for part in parts:
        max_tokens = min(template.max_tokens, cmds.engine.settings.max_tokens)
        handle = await cmds.engine.submit(ChatJob(model=cmds.model_for(request, "chat", template.name),
                                                  origin=request.origin, messages=part.messages,
                                                  max_tokens=max_tokens,
                                                  conversation=request.conversation))

        async def labelled(label=part.label, handle=handle) -> AsyncIterator[str]:
            if len(parts) > 1:
                yield f"{label}: "
            async for token in tokens_of(handle):
                yield token

        await reply.stream(labelled(), status=f"queued ({handle.id})")
        out.append((await handle.result()).text)
    return out


def parse_slots(arg: str) -> dict:
    """'product=Lemonade; size=330 ml' -> {'product': 'Lemonade', 'size': '330 ml'}."""
    values = {}
    for piece in arg.replace("\n", ";").split(";"):
        if not piece.strip():
            continue
        key, sep, value = piece.partition("=")
        if not sep:
            raise UserError(f"'{piece.strip()}' is not a slot; write name=value pairs separated by ';'.")
        values[key.strip().lower()] = value.strip()
    return values


async def collect(template: Template, values: dict, reply: Reply) -> dict | None:
    """The slots, completed through the reply's form or prompts; None when the person cancelled."""
    if isinstance(reply, FillsForm) and template.missing(values):
        got = await reply.form(template, values)
        return None if got is None else {**values, **got}
    if isinstance(reply, AsksLine):
        values = dict(values)
        for slot in template.slots:
            if str(values.get(slot.name) or "").strip():
                continue
            hint = f" ({'/'.join(slot.choices)})" if slot.choices else ""
            default = f" [{slot.default}]" if slot.default else ""
            answer = await reply.ask(f"{slot.label}{hint}{default}: ")
            if answer is None:
                return None
            values[slot.name] = answer.strip() or slot.default
        return values
    missing = template.missing(values)
    if missing:
        example = "; ".join(f"{s.name}=…" for s in template.slots)
        raise UserError(f"/{template.name} needs {', '.join(s.name for s in missing)}. "
                        f"Give them as: /{template.name} {example}")
    return values


async def cmd_translate(cmds: Commands, request: Request, arg: str, reply: Reply, languages: str = "") -> None:
    """`languages`: given typed (a Discord option); else named before a colon in `arg`."""
    if not arg.strip():
        raise UserError("Translate what? Try: /translate fr,de: Hello, how are you?")
    template = T.get("translate")
    values = {"languages": languages, "text": arg.strip()} if languages else T.split_translate_arg(arg)
    await run_parts(cmds, request, template,
                    template.render(values, cmds.engine.settings.max_prompt_chars), reply)


async def cmd_write(cmds: Commands, request: Request, arg: str, reply: Reply) -> None:
    template = T.get("write")
    values = T.split_write_arg(arg)
    if not values["topic"]:
        values = await collect(template, values, reply)
        if values is None:
            await reply.private("Cancelled.")
            return
    await run_parts(cmds, request, template,
                    template.render(values, cmds.engine.settings.max_prompt_chars), reply)


async def cmd_promo(cmds: Commands, request: Request, arg: str, reply: Reply) -> None:
    template = T.get("promo")
    values = await collect(template, parse_slots(arg), reply)
    if values is None:
        await reply.private("Cancelled.")
        return
    checked = template.check(values, cmds.engine.settings.max_prompt_chars)
    await run_parts(cmds, request, template, template.build(checked), reply)
    if checked["output"] in ("image", "both"):
        await poster(cmds, request, reply, T.promo_poster_prompt(checked))


async def poster(cmds: Commands, request: Request, reply: Reply, prompt: str) -> None:
    cmds.engine.refresh_models()
    if not cmds.engine.installed("image"):
        await reply.say("🧩 No image model is installed, so there is no poster this time. An admin "
                        "can add one with `pip install 'confab-bot[images]'` then "
                        "`confab models pull sdxl-turbo`.")
        return
    await run_imagine(cmds, request, reply, ImagineSpec(prompt=prompt[:cmds.engine.settings.max_image_prompt_chars],
                                                        model=cmds.model_for(request, "image", "promo")))


def register_commands(commands: Commands) -> None:
    commands.register("translate", cmd_translate)
    commands.register("promo", cmd_promo)
    commands.register("write", cmd_write)
