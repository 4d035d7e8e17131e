"""/v1/chat/completions requests whose messages carry images (`image_url` parts).

`engine.api.chat` hands such a request here. Every image is checked (a data: URL, or an
http(s) URL of a host allowed by CONFAB_IMAGE_URL_HOSTS) and kept under the data folder before
anything is queued; then the vision model answers, or, with none installed, OCR reads the
images' text for the chat model and the answer starts by saying so.
"""
from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from aiohttp import ClientError, ClientSession, ClientTimeout, web

from bots.api.app_util import caller_id
from bots.api.chat_request import ROLES, parse_chat
from bots.api.keys import ENGINE
from bots.api.validate import string
from engine.errors import BadImage, BadRequest, LimitExceeded
from engine.jobs import Origin
from engine.media import imaging
from engine.messages import OCR_ONLY_NOTE
from engine.work.images import VisionMessage, ask_about_images

FETCH_TIMEOUT_S = 15


def has_image_parts(raw) -> bool:
    return isinstance(raw, list) and any(
        isinstance(m, dict) and isinstance(m.get("content"), list) and any(
            isinstance(p, dict) and p.get("type") == "image_url" for p in m["content"])
        for m in raw)


def text_only(raw: list) -> list:
    """The messages with image parts left out (to check everything else the usual way)."""
    out = []
    for m in raw:
        if isinstance(m, dict) and isinstance(m.get("content"), list):
            parts = [p for p in m["content"] if not (isinstance(p, dict) and p.get("type") == "image_url")]
            m = {**m, "content": parts or ""}
        out.append(m)
    return out


def host_allowed(url: str, hosts: tuple[str, ...]) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return bool(host) and ("*" in hosts or host in {h.lower() for h in hosts})


async def fetch_image(url: str, settings) -> bytes:
    """An http(s) image of an allowed host, read up to the byte limit."""
    limit = settings.max_image_bytes
    try:
        async with ClientSession(timeout=ClientTimeout(total=FETCH_TIMEOUT_S)) as session:
            async with session.get(url, allow_redirects=False) as r:
                if r.status != 200:
                    raise BadImage(f"Fetching the image at {url} failed: HTTP {r.status}.")
                if r.content_length and r.content_length > limit:
                    raise LimitExceeded("The image", r.content_length, limit, "bytes", status=413)
                data = await r.content.read(limit + 1)
    except (ClientError, asyncio.TimeoutError) as e:
        raise BadImage(f"Fetching the image at {url} failed: {e or 'timed out'}.") from None
    if len(data) > limit:
        raise LimitExceeded("The image", f"over {limit}", limit, "bytes", status=413)
    return data


async def image_bytes(part: dict, where: str, settings) -> bytes:
    ref = part.get("image_url")
    url = ref.get("url") if isinstance(ref, dict) else ref
    if not isinstance(url, str) or not url:
        raise BadRequest(f"{where}.image_url.url must be a string.", param=where)
    if url.startswith("data:"):
        return imaging.decode_data_url(url, settings, f"The image in {where}")
    if url.startswith(("http://", "https://")):
        if not host_allowed(url, settings.image_url_hosts):
            raise BadRequest(f"{where}: Confab does not fetch images from the web here; send the "
                             "image inline as a data: URL (data:image/png;base64,...). An admin "
                             "can allow hosts with CONFAB_IMAGE_URL_HOSTS.", param=where)
        return await fetch_image(url, settings)
    raise BadRequest(f"{where}.image_url.url must be a data: URL (or http(s) where allowed).",
                     param=where)


async def vision_messages(raw: list, settings) -> list[VisionMessage]:
    """Messages with every image checked and saved; raises before anything is queued."""
    out, count = [], 0
    for i, m in enumerate(raw):
        role = m.get("role")
        role = "system" if role == "developer" else role
        content = m.get("content")
        if not isinstance(content, list):
            out.append(VisionMessage(role, content if isinstance(content, str) else ""))
            continue
        texts, paths = [], []
        for j, part in enumerate(content):
            where = f"messages[{i}].content[{j}]"
            if part.get("type") != "image_url":
                texts.append(str(part.get("text", "")))
                continue
            if role != "user":
                raise BadRequest(f"{where}: only user messages may carry images.", param=where)
            count += 1
            if count > settings.max_images:
                raise LimitExceeded("The number of images in the request", count, settings.max_images)
            data = await image_bytes(part, where, settings)
            info = imaging.check_image(data, settings, f"The image in {where}")
            paths.append(await asyncio.to_thread(imaging.save_upload, data, info, settings))
        out.append(VisionMessage(role, "\n".join(texts), paths))
    return out


async def start_vision(request: web.Request, body: dict, meta: dict):
    """Check the images and queue the job that answers (with no vision model installed, after
    OCR has read them)."""
    engine = request.app[ENGINE]
    settings = engine.settings
    user = string(body, "user") or ""
    origin = Origin(platform="api", user=caller_id(request) + (f"/{user[:64]}" if user else ""))
    raw = body.get("messages")
    if any(not isinstance(m, dict) or m.get("role") not in ROLES for m in raw):
        raise BadRequest("Each message must be an object with a role of "
                         f"{', '.join(ROLES)}.", param="messages")
    params = parse_chat({**body, "messages": text_only(raw)}, settings, origin)
    messages = await vision_messages(raw, settings)
    answer = await ask_about_images(
        engine, origin, messages, model=params.model, priority=params.priority,
        max_tokens=params.max_tokens, temperature=params.temperature, top_p=params.top_p,
        top_k=params.top_k, stop=params.stop, seed=params.seed, meta={**meta, "images": True})
    return answer.handle


def image_path(job) -> str | None:
    """How a question about images was answered: by the vision model, or OCR and the chat model."""
    if not job.meta.get("images"):
        return None
    return "vision" if job.kind == "vision" else "ocr"


def answer_prefix(job) -> str:
    return OCR_ONLY_NOTE if image_path(job) == "ocr" else ""


def image_headers(job) -> dict:
    via = image_path(job)
    return {"X-Confab-Image-Path": via} if via else {}
