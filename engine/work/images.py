"""Images as engine work: generating them (diffusers), understanding them (a vision model, or
OCR of their text when none is installed), with their jobs, loaders and executors.

Jobs hold paths, never bytes: uploads are checked at intake (`engine.imaging`) and kept under
the data folder; generated images are written there too and the result holds their paths.

    ImageJob  -> ImageResult   text to image; Progress(step, total) while it runs
    VisionJob -> ChatResult    images + text to text on a vision model; Token events
    OcrJob    -> OcrResult     the text in images

`ask_about_images` picks the vision model, or OCR then the chat model, for a question.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import io
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from engine.config import Settings
from engine.errors import (
    BackendFailed,
    BackendMissing,
    BadImage,
    BadRequest,
    JobCancelled,
    LimitExceeded,
    UnknownModel,
)
from engine.jobs import (
    ChatJob,
    ChatMessage,
    ChatResult,
    Job,
    Origin,
    Progress,
    Token,
    Usage,
    register_job_type,
)
from engine.media import imaging
from engine.messages import OCR_ONLY_NOTE
from engine.work.chat_runner import ChatRunner
from engine.work.registry import RunContext, cpu_threads, register_executor, register_loader
from models.catalog import BY_NAME
from models.diffusers_image import Adapter, Defaults, DiffusersImage, GenerationRequest
from models.llava_vision import VisionTurn, build_messages
from models.ocr import OcrReader, as_text
from models.registry import InstalledModel, sha256_file

log = logging.getLogger(__name__)

MIN_SIDE = 64
OCR_CHARS_PER_IMAGE = 4000


def _rebuild(cls, record: dict, **nested):
    """A job from its stored record: known fields only, the origin and nested lists rebuilt."""
    fields = {f.name for f in dataclasses.fields(cls)}
    data = {k: v for k, v in record.items() if k in fields}
    data["origin"] = Origin(**data.get("origin", {}))
    for name, item_cls in nested.items():
        if name in data:
            data[name] = [item_cls(**x) if isinstance(x, dict) else x for x in data[name]]
    return cls(**data)


# -- generation ---------------------------------------------------------------------------------

@register_job_type
@dataclass
class ImageJob(Job):
    kind: ClassVar[str] = "image"
    prompt: str = ""
    negative_prompt: str = ""
    n: int = 1
    width: int = 0                  # 0 (with height 0): the model's default size
    height: int = 0
    steps: int = 0                  # 0: the model's default
    guidance: float | None = None   # None: the model's default
    seed: int | None = None         # None: chosen at intake, so a rerun draws the same
    format: str = "png"             # png, jpeg, webp

    @classmethod
    def from_record(cls, record: dict) -> "ImageJob":
        return _rebuild(cls, record)


@dataclass
class GeneratedImage:
    path: str                       # under DATA_DIR/images; its name is its link
    seed: int
    width: int
    height: int
    format: str = "png"
    nsfw: bool = False              # the pipeline's safety checker blanked it

    @property
    def filename(self) -> str:
        return Path(self.path).name

    @property
    def mime(self) -> str:
        return f"image/{self.format}"

    def read(self) -> bytes:
        try:
            return Path(self.path).read_bytes()
        except FileNotFoundError:
            raise BadImage("The image has expired and was deleted; generate it again "
                           "(the same seed draws the same picture).") from None


@dataclass
class ImageResult:
    images: list[GeneratedImage]
    model: str
    prompt: str
    steps: int
    guidance: float
    seconds: float


def check_image_job(job: ImageJob, settings: Settings) -> ImageJob:
    """Refuse a request over a limit before any work starts; choose its seed."""
    if not isinstance(job.prompt, str) or not job.prompt.strip():
        raise BadRequest("Say what to draw: the prompt is empty.", param="prompt")
    for name, text in (("prompt", job.prompt), ("negative_prompt", job.negative_prompt)):
        if len(text) > settings.max_image_prompt_chars:
            raise LimitExceeded(f"The {name.replace('_', ' ')}", len(text),
                                settings.max_image_prompt_chars, "characters")
    if not 1 <= job.n:
        raise BadRequest("'n' must be at least 1.", param="n")
    if job.n > settings.max_images:
        raise LimitExceeded("The number of images ('n')", job.n, settings.max_images)
    if (job.width == 0) != (job.height == 0):
        raise BadRequest("Give both width and height, or neither.", param="size")
    for side in (job.width, job.height):
        if side and side > settings.max_image_side:
            raise LimitExceeded(f"The image size ({job.width}x{job.height})", side,
                                settings.max_image_side, "pixels per side")
        if side and (side < MIN_SIDE or side % 8):
            raise BadRequest(f"Image sides must be multiples of 8 from {MIN_SIDE} to "
                             f"{settings.max_image_side}; got {job.width}x{job.height}.", param="size")
    if job.steps < 0:
        raise BadRequest("'steps' must be at least 1.", param="steps")
    if job.steps > settings.max_image_steps:
        raise LimitExceeded("The number of steps", job.steps, settings.max_image_steps)
    if job.guidance is not None and not 0 <= job.guidance <= 30:
        raise BadRequest("'guidance_scale' must be between 0 and 30.", param="guidance_scale")
    if job.format not in imaging.OUTPUT_FORMATS:
        raise BadRequest(f"'output_format' must be one of {', '.join(imaging.OUTPUT_FORMATS)}.",
                         param="output_format")
    if job.seed is None:
        job.seed = random.randrange(2**31)
    elif not 0 <= job.seed < 2**63:
        raise BadRequest("'seed' must be a non-negative integer.", param="seed")
    job.model = job.model or settings.default_image_model
    return job


@register_loader("diffusers", budget_aware=True, library="torch")
def load_diffusers(model: InstalledModel, device: str, settings: Settings, room: int | None = None):
    if not all(importlib.util.find_spec(m) for m in ("diffusers", "torch")):
        raise BackendMissing("diffusers", "images")
    o = model.options
    defaults = Defaults(steps=int(o.get("steps", 20)), guidance=float(o.get("guidance", 7.5)),
                        size=int(o.get("size", 0)))
    return DiffusersImage(model.path, device, defaults, room=room,
                          max_pixels=settings.max_image_side ** 2, threads=cpu_threads(settings),
                          adapter_idle_s=settings.keep_alive_s)


@register_executor("image", "image")
def run_image(pipe, job: ImageJob, ctx: RunContext) -> ImageResult:
    settings = ctx.settings
    check_image_job(job, settings)
    req = pipe.resolve(GenerationRequest(job.prompt, job.negative_prompt, job.n, job.width,
                                         job.height, job.steps, job.guidance, job.seed),
                       settings.max_image_side)
    started = time.monotonic()
    ctx.emit(Progress(0, req.steps))
    a = ctx.adapter
    adapter = Adapter(a.name, a.path, float(a.options.get("scale", 1.0))) if a else None
    out = pipe.generate(req, lambda k, total: ctx.emit(Progress(k, total)), ctx.cancelled,
                        adapter=adapter)
    if out.cancelled or ctx.cancelled():
        raise JobCancelled()
    imaging.sweep_all(settings)
    images = []
    for i, (image, seed) in enumerate(zip(out.images, out.seeds)):
        path = imaging.new_image_path(settings, job.id, i, job.format)
        path.write_bytes(imaging.encode_image(image, job.format))
        nsfw = out.nsfw[i] if i < len(out.nsfw) else False
        images.append(GeneratedImage(str(path), seed, image.width, image.height, job.format, nsfw))
    return ImageResult(images, job.model, job.prompt, out.steps, out.guidance,
                       time.monotonic() - started)


# -- understanding: vision models -------------------------------------------------------------

@dataclass
class VisionMessage:
    role: str                                        # system, user, assistant
    text: str
    images: list[str] = field(default_factory=list)  # paths of checked uploads


@register_job_type
@dataclass
class VisionJob(Job):
    kind: ClassVar[str] = "vision"
    messages: list[VisionMessage] = field(default_factory=list)
    max_tokens: int | None = None
    temperature: float | None = None     # None: the model's own defaults, as for chat
    top_p: float | None = None
    top_k: int | None = None
    stop: list[str] = field(default_factory=list)
    repeat_penalty: float | None = None
    seed: int | None = None

    @classmethod
    def from_record(cls, record: dict) -> "VisionJob":
        return _rebuild(cls, record, messages=VisionMessage)


def image_for_model(path: str) -> tuple[bytes, str]:
    """An upload as (bytes, mime) a vision handler reads: PNG and JPEG as they are, other
    formats (GIF, WebP, BMP) converted to PNG (first frame)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise BadImage("The image is no longer available (uploads are kept for a day); send "
                       "it again.") from None
    kind = imaging.sniff(data)
    if kind in ("png", "jpeg"):
        return data, f"image/{kind}"
    from PIL import Image
    with Image.open(io.BytesIO(data)) as img:
        return imaging.encode_image(img.convert("RGB"), "png"), "image/png"


@register_executor("vision", "vision", on_loop=True)
async def run_vision(runner: ChatRunner, job: VisionJob, ctx: RunContext) -> ChatResult:
    """Images and text on the vision model's runner (llama.cpp's multimodal input)."""
    turns = [VisionTurn(m.role, m.text, [image_for_model(p) for p in m.images]) for m in job.messages]
    messages = build_messages(turns)
    max_tokens = job.max_tokens or ctx.settings.max_tokens
    payload = {"messages": messages, "max_tokens": max(1, min(max_tokens, runner.n_ctx - 16)),
               **runner.sampling(job)}
    if job.stop:
        payload["stop"] = list(job.stop)
    slot, _ = runner.take_slot("")
    finished = False
    try:
        def on_delta(delta: dict, logprobs: dict | None) -> None:
            if delta.get("content"):
                ctx.emit(Token(delta["content"]))

        out = await runner.generate(payload, slot, on_delta, ctx.cancelled)
        finished = out.finish_reason != "cancelled"
    finally:
        runner.give_back(slot, keep=finished)
    return ChatResult(out.text, out.finish_reason, Usage(out.prompt_tokens, out.completion_tokens),
                      job.model)


# -- understanding: OCR -------------------------------------------------------------------------

@register_job_type
@dataclass
class OcrJob(Job):
    kind: ClassVar[str] = "ocr"
    images: list[str] = field(default_factory=list)  # paths of checked uploads

    @classmethod
    def from_record(cls, record: dict) -> "OcrJob":
        return _rebuild(cls, record)


@dataclass
class OcrText:
    text: str                       # the image's text in reading order
    lines: int
    mean_score: float


@dataclass
class OcrResult:
    texts: list[OcrText]            # one per image
    model: str

    @property
    def text(self) -> str:
        return "\n\n".join(t.text for t in self.texts)


@register_loader("rapidocr", library="onnxruntime")
def load_ocr(model: InstalledModel, device: str, settings: Settings):
    if importlib.util.find_spec("rapidocr_onnxruntime") is None:
        raise BackendMissing("rapidocr-onnxruntime", "ocr")
    entry = BY_NAME.get(model.name)
    for f in (entry.files[1:] if entry else ()):   # the registry checks the first file
        path = Path(model.path) / Path(f.path).name
        if f.sha256 and path.exists() and sha256_file(path) != f.sha256:
            raise BackendFailed(f"{path} failed its checksum; reinstall rapidocr-onnxruntime.")
    return OcrReader(model.path, threads=cpu_threads(settings))


@register_executor("ocr", "ocr")
def run_ocr(reader, job: OcrJob, ctx: RunContext) -> OcrResult:
    texts = []
    for i, path in enumerate(job.images):
        if ctx.cancelled():
            raise JobCancelled()
        data, _ = image_for_model(path)
        lines = reader.read(data)
        score = sum(l.score for l in lines) / len(lines) if lines else 0.0
        texts.append(OcrText(as_text(lines), len(lines), score))
        ctx.emit(Progress(i + 1, len(job.images)))
    return OcrResult(texts, job.model)


# -- asking about images -------------------------------------------------------------------------

@dataclass
class ImageAnswer:
    """The job that answers a question about images, and what to say before its words."""
    handle: object                  # JobHandle of a VisionJob or a ChatJob
    via: str                        # vision | ocr
    prefix: str = ""                # said before the model's answer (the OCR note)
    ocr_text: str = ""              # what OCR read, on the OCR path


def pick_vision_model(engine, name: str = "") -> tuple[str, InstalledModel | None]:
    """('vision', model) when a vision model answers, ('ocr', chat model or None) when OCR and
    a chat model do. A named chat model means OCR with that chat model."""
    installed = engine.refresh_models()
    if name:
        model = installed.get(name)
        if model is None or model.kind not in ("vision", "chat"):
            raise UnknownModel(name, "vision", sorted(m.name for m in installed.values()
                                                      if m.kind in ("vision", "chat")))
        return ("vision", model) if model.kind == "vision" else ("ocr", model)
    preferred = engine.settings.default_vision_model
    if preferred:
        model = installed.get(preferred)
        if model is None or model.kind != "vision":
            raise UnknownModel(preferred, "vision", sorted(m.name for m in installed.values()
                                                           if m.kind == "vision"))
        return "vision", model
    vision = sorted((m for m in installed.values() if m.kind == "vision"), key=lambda m: m.name)
    return ("vision", vision[0]) if vision else ("ocr", None)


def ocr_context(messages: list[VisionMessage], texts: list[str]) -> list[ChatMessage]:
    """Chat messages in which each image is replaced by the text OCR read from it."""
    out, k = [], 0
    for m in messages:
        body = m.text
        for _ in m.images:
            read = (texts[k] if k < len(texts) else "").strip()
            if len(read) > OCR_CHARS_PER_IMAGE:
                read = read[:OCR_CHARS_PER_IMAGE] + " …(cut)"
            k += 1
            body += (f"\n\n[Text read from attached image {k}:\n{read}\n]" if read
                     else f"\n\n[Attached image {k}: no text could be read from it.]")
        out.append(ChatMessage(m.role, body.strip()))
    return out


OCR_SYSTEM = ("The user attached images. You cannot see them: you are given only the text read "
              "from them, in square brackets. Answer from that text.")


async def ask_about_images(engine, origin: Origin, messages: list[VisionMessage], model: str = "",
                           priority: int | None = None, max_tokens: int | None = None,
                           temperature: float | None = None, top_p: float | None = None,
                           top_k: int | None = None,
                           stop: list[str] | None = None, seed: int | None = None,
                           meta: dict | None = None) -> ImageAnswer:
    """Submit the job that answers: the vision model when one is installed (or named), else
    OCR of the images (awaited) and then the chat model with that text as context. `meta` goes
    with the answering job (see `Job.meta`)."""
    how, chosen = pick_vision_model(engine, model)
    if how == "vision":
        handle = await engine.submit(VisionJob(
            model=chosen.name, origin=origin, priority=priority, messages=messages,
            max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
            stop=list(stop or []), seed=seed, meta=dict(meta or {})))
        return ImageAnswer(handle, "vision")
    paths = [p for m in messages for p in m.images]
    ocr = await engine.submit(OcrJob(origin=origin, priority=priority, images=paths))
    try:
        result: OcrResult = await ocr.result()
    except BaseException:
        await ocr.cancel()
        raise
    texts = [t.text for t in result.texts]
    chat = ocr_context(messages, texts)
    system = [m for m in chat if m.role == "system"]
    chat = [m for m in chat if m.role != "system"]
    instructions = "\n\n".join([m.content for m in system] + [OCR_SYSTEM])
    handle = await engine.submit(ChatJob(
        model=chosen.name if chosen else "", origin=origin, priority=priority,
        messages=[ChatMessage("system", instructions)] + chat, max_tokens=max_tokens,
        temperature=temperature, top_p=top_p, top_k=top_k, stop=list(stop or []), seed=seed,
        meta=dict(meta or {})))
    return ImageAnswer(handle, "ocr", OCR_ONLY_NOTE, "\n\n".join(texts))
