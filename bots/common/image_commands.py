"""Images in chat, on every platform: `/imagine PROMPT` and questions about attached images.

/imagine posts a status message, edits it as the job moves (place in line, then "step k of N"),
sends the picture as a file, and leaves a summary with the seed. A message with image
attachments is answered about those images (the vision model, or OCR of their text).

For platform buttons (Slack, Discord):
- `ImagineSpec` is everything a picture depends on; `spec.payload()` / `ImagineSpec.from_payload`
  fit in a button's value (under 2,000 characters), `spec.reroll()` is the same request with a
  new seed, and `run_imagine(cmds, request, reply, spec)` runs one.
- `deliver(reply, ref, result)` sends a finished job's images (for resume listeners).
- A Reply may implement `ImageControls` (bots/common/reply.py): it is called with the
  status message's ref when the job is queued (done=False: offer Cancel, which is
  `engine.cancel(job_id)`) and when it finished (done=True: offer Re-roll).

Attachments in `Request.attachments` are read through `read_attachment`: bytes, or an object
with `async read()` (or `.data`), and `mimetype`/`content_type`, `name`/`filename`, `size`.
"""
from __future__ import annotations

import inspect
import json
import random
import re
import time
from dataclasses import asdict, dataclass, replace

from bots.common.commands import Commands, Request
from bots.common.render import tokens_of
from bots.common.reply import ImageControls, Reply
from engine import ConfabError, UserError
from engine.errors import BadImage, LimitExceeded
from engine.jobs import Progress, Queued, Started
from engine.media.imaging import check_image, save_upload
from engine.messages import explain
from engine.work.images import ImageJob, ImageResult, VisionMessage, ask_about_images, check_image_job

PROGRESS_EVERY_S = 1.0
DEFAULT_QUESTION = "Describe this image."
IMAGE_NAMES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp")
_OPTION = re.compile(r"(?:^|\s)--(seed|steps|size|n)[ =](\S+)")


@dataclass(frozen=True)
class ImagineSpec:
    prompt: str
    seed: int | None = None
    steps: int = 0
    width: int = 0
    height: int = 0
    n: int = 1
    model: str = ""

    def payload(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_payload(cls, text: str) -> "ImagineSpec":
        return cls(**json.loads(text))

    def reroll(self) -> "ImagineSpec":
        """The same picture request with another seed."""
        return replace(self, seed=random.randrange(2**31))


def parse_imagine(arg: str) -> ImagineSpec:
    """'/imagine a red fox --seed 7 --steps 4 --size 512x512 --n 2' -> ImagineSpec."""
    options = dict(_OPTION.findall(arg))
    prompt = _OPTION.sub(" ", arg).strip()
    if not prompt:
        raise UserError("Say what to draw, like: /imagine a lighthouse at dawn, oil painting")
    try:
        seed = int(options["seed"]) if "seed" in options else None
        steps = int(options.get("steps", 0))
        n = int(options.get("n", 1))
        width = height = 0
        if "size" in options:
            w, _, h = options["size"].lower().partition("x")
            width, height = int(w), int(h or w)
    except ValueError:
        raise UserError("Options are whole numbers: --seed 7, --steps 4, --size 512x512, --n 2.") from None
    return ImagineSpec(prompt, seed, steps, width, height, n)


def status_text(spec: ImagineSpec, event: object, job_id: str) -> str | None:
    if isinstance(event, Queued):
        return f"🎨 “{spec.prompt}” is #{event.position} in line, starting in about {event.eta_s:.0f} s ({job_id})"
    if isinstance(event, Started):
        return f"🎨 Drawing “{spec.prompt}”… ({job_id})"
    if isinstance(event, Progress) and event.total:
        return f"🎨 Drawing “{spec.prompt}”: step {event.step} of {event.total} ({job_id})"
    return None


def done_text(result: ImageResult) -> str:
    first = result.images[0]
    seeds = ", ".join(str(i.seed) for i in result.images)
    flagged = sum(i.nsfw for i in result.images)
    note = f" · {flagged} blanked by the safety checker" if flagged else ""
    return (f"🎨 “{result.prompt}” · seed {seeds} · {result.steps} steps · "
            f"{first.width}×{first.height} · {result.seconds:.1f} s · {result.model}{note}")


async def _controls(reply: Reply, ref, job_id: str, spec: ImagineSpec, done: bool) -> None:
    if isinstance(reply, ImageControls):
        await reply.image_controls(ref, job_id, spec, done)


async def run_imagine(cmds: Commands, request: Request, reply: Reply, spec: ImagineSpec,
                      every_s: float = PROGRESS_EVERY_S) -> ImageResult | None:
    """Queue the picture, show its progress by editing one message, then send it as a file.
    Returns the result, or None when the job failed or was cancelled (the message says so)."""
    engine = cmds.engine
    job = check_image_job(ImageJob(model=spec.model or cmds.model_for(request, "image"),
                                   origin=request.origin, prompt=spec.prompt,
                                   n=spec.n, width=spec.width, height=spec.height,
                                   steps=spec.steps, seed=spec.seed), engine.settings)
    spec = replace(spec, seed=job.seed)
    handle = await engine.submit(job)
    ref = await reply.say(f"🎨 Queued “{spec.prompt}” ({handle.id})")
    await _controls(reply, ref, handle.id, spec, done=False)
    shown, last = "", 0.0
    async for event in handle:
        text = status_text(spec, event, handle.id)
        final_step = isinstance(event, Progress) and event.step == event.total
        if text and text != shown and (final_step or time.monotonic() - last >= every_s):
            await reply.update(ref, text)
            shown, last = text, time.monotonic()
    try:
        result: ImageResult = await handle.result()
    except ConfabError as e:
        await reply.update(ref, explain(e))
        return None
    await deliver(reply, ref, result)
    await _controls(reply, ref, handle.id, spec, done=True)
    return result


async def deliver(reply: Reply, ref, result: ImageResult) -> None:
    """Send a finished picture job's images and leave the summary in the status message (also
    what an adapter's resume listener does with an image job that ran after a restart)."""
    for image in result.images:
        await reply.send_file(image.read(), f"confab-{image.seed}.{image.format}", title=result.prompt)
    await reply.update(ref, done_text(result))


async def reroll(cmds: Commands, request: Request, reply: Reply, payload: str) -> ImageResult | None:
    """What a Re-roll button does: the same request (from `ImagineSpec.payload()`), a new seed."""
    return await run_imagine(cmds, request, reply, ImagineSpec.from_payload(payload).reroll())


async def cmd_imagine(cmds: Commands, request: Request, arg: str, reply: Reply) -> None:
    await run_imagine(cmds, request, reply, parse_imagine(arg))


# -- questions about attached images -------------------------------------------------------------

def _first(att, *names, default=None):
    for name in names:
        value = att.get(name) if isinstance(att, dict) else getattr(att, name, None)
        if value:
            return value
    return default


def looks_like_image(att) -> bool:
    """Whether an attachment is offered as an image (its content is checked later)."""
    if isinstance(att, (bytes, bytearray)):
        return True
    kind = _first(att, "kind")
    mime = str(_first(att, "mimetype", "content_type", "mime", default=""))
    name = str(_first(att, "name", "filename", default="")).lower()
    return kind == "image" or mime.startswith("image/") or name.endswith(IMAGE_NAMES)


async def read_attachment(att, limit: int) -> bytes:
    """An attachment's bytes, refusing one over `limit` before reading it when its size is known."""
    size = _first(att, "size", default=0) if not isinstance(att, (bytes, bytearray)) else len(att)
    name = _first(att, "name", "filename", default="the image") if not isinstance(att, (bytes, bytearray)) else "the image"
    if size and int(size) > limit:
        raise LimitExceeded(f"{name}", int(size), limit, "bytes", status=413)
    if isinstance(att, (bytes, bytearray)):
        return bytes(att)
    data = _first(att, "data")
    if data is None:
        read = getattr(att, "read", None)
        if read is None:
            raise BadImage(f"I could not read {name}.")
        data = read()
        if inspect.isawaitable(data):
            data = await data
    if len(data) > limit:
        raise LimitExceeded(f"{name}", len(data), limit, "bytes", status=413)
    return bytes(data)


async def answer_about_images(cmds: Commands, request: Request, question: str, reply: Reply) -> str:
    """Check and keep the attached images, then answer the question about them in the thread."""
    engine = cmds.engine
    settings = engine.settings
    images = [a for a in request.attachments if looks_like_image(a)]
    if len(images) > settings.max_images:
        raise LimitExceeded("The number of images", len(images), settings.max_images)
    paths = []
    for att in images:
        data = await read_attachment(att, settings.max_image_bytes)
        name = _first(att, "name", "filename", default="The image") if not isinstance(att, (bytes, bytearray)) else "The image"
        info = check_image(data, settings, name)
        paths.append(save_upload(data, info, settings))
    question = question or DEFAULT_QUESTION
    history = request.history
    if history is None:
        history = await engine.history(request.conversation, settings.history_messages)
    messages = [VisionMessage("system", settings.system_prompt)] if settings.system_prompt else []
    messages += [VisionMessage(role, content) for role, content in history[-settings.history_messages:]]
    messages.append(VisionMessage("user", question, paths))
    answer = await ask_about_images(engine, request.origin, messages)

    async def chunks():
        if answer.prefix:
            yield answer.prefix
        async for text in tokens_of(answer.handle):
            yield text

    text = await reply.stream(chunks(), status=f"queued ({answer.handle.id})")
    result = await answer.handle.result()
    await engine.remember_exchange(request.conversation, f"{question} [{len(paths)} image(s) attached]",
                                   answer.prefix + result.text)
    return text


def register_commands(commands: Commands) -> None:
    commands.register("imagine", cmd_imagine)
    previous_ask = commands.handlers.get("ask")

    async def ask(cmds: Commands, request: Request, arg: str, reply: Reply) -> None:
        if any(looks_like_image(a) for a in request.attachments):
            await answer_about_images(cmds, request, arg, reply)
        elif previous_ask is not None:
            await previous_ask(cmds, request, arg, reply)

    commands.register("ask", ask)
