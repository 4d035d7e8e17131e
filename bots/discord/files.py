"""Attachments in: downloaded only from Discord's file hosts (and the REST host Confab was told
to use), within a size limit and a time bound. Images are handed to the shared image commands
as `DiscordFile`s, which fetch the same way."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import aiohttp
import discord

from engine import BadMedia, LimitExceeded

DISCORD_FILE_HOSTS = ("cdn.discordapp.com", "media.discordapp.net")
IMAGE_NAMES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp")
DOWNLOAD_TIMEOUT_S = 60.0
MAX_REDIRECTS = 3
REDIRECTS = (301, 302, 303, 307, 308)


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    default = 443 if scheme == "https" else 80
    return scheme, (parts.hostname or "").lower(), parts.port or default


def allowed_origins(api_url: str = "") -> set[tuple[str, str, int]]:
    allowed = {("https", host, 443) for host in DISCORD_FILE_HOSTS}
    if api_url:
        allowed.add(_origin(api_url))
    return allowed


def may_download(url: str, api_url: str = "") -> bool:
    """True for Discord's CDN over https, and for the scheme, host and port of
    CONFAB_DISCORD_API_URL (a proxy, or a test server); never anything else."""
    return _origin(url) in allowed_origins(api_url)


def is_audio(attachment: discord.Attachment) -> bool:
    ctype = (attachment.content_type or "").split(";")[0].strip().lower()
    if ctype.startswith("audio/"):
        return True
    return attachment.filename.lower().endswith((".ogg", ".opus", ".mp3", ".m4a", ".wav", ".flac",
                                                 ".webm", ".aac"))


def is_image(attachment: discord.Attachment) -> bool:
    ctype = (attachment.content_type or "").split(";")[0].strip().lower()
    return ctype.startswith("image/") or attachment.filename.lower().endswith(IMAGE_NAMES)


@dataclass(frozen=True)
class KeptAttachment:
    """What `download` reads of an attachment, as kept in the store with a slash command that is
    answered after a restart (from `discord.Attachment.to_dict()`)."""
    url: str
    filename: str
    size: int
    content_type: str | None = None

    @classmethod
    def of(cls, record: dict) -> "KeptAttachment":
        return cls(record["url"], record["filename"], int(record.get("size") or 0), record.get("content_type"))


class DiscordFile:
    """An attachment as `Request.attachments` holds it (see bots/common/image_commands.py): name,
    type and size as Discord gives them; `read()` downloads it only from Discord's hosts."""

    def __init__(self, attachment: discord.Attachment, max_bytes: int, api_url: str = ""):
        self.attachment, self.max_bytes, self.api_url = attachment, max_bytes, api_url
        self.name, self.size = attachment.filename, attachment.size
        self.mimetype = (attachment.content_type or "").split(";")[0].strip()

    async def read(self) -> bytes:
        return await download(self.attachment, self.max_bytes, self.api_url)


async def download(attachment: discord.Attachment, max_bytes: int, api_url: str = "",
                   timeout: float = DOWNLOAD_TIMEOUT_S) -> bytes:
    """The attachment's bytes. Redirects are followed by hand, a few hops and only to the same
    allowed hosts, and the body is read no further than `max_bytes`."""
    if not may_download(attachment.url, api_url):
        raise BadMedia(f"I only fetch files from Discord's own file servers, and "
                       f"'{attachment.filename}' is somewhere else.")
    if attachment.size > max_bytes:
        raise _too_large(attachment.filename, attachment.size, max_bytes)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            return await asyncio.wait_for(_fetch(session, attachment, max_bytes, api_url), timeout)
    except asyncio.TimeoutError:
        raise BadMedia(f"Downloading '{attachment.filename}' took longer than {timeout:g} s.") from None
    except aiohttp.ClientError as e:
        raise BadMedia(f"I could not download '{attachment.filename}' from Discord ({e}).") from None


async def _fetch(session: aiohttp.ClientSession, attachment: discord.Attachment, max_bytes: int,
                 api_url: str) -> bytes:
    url = attachment.url
    for _ in range(MAX_REDIRECTS + 1):
        async with session.get(url, allow_redirects=False) as r:
            if r.status in REDIRECTS:
                url = urljoin(url, r.headers.get("Location", ""))
                if not may_download(url, api_url):
                    raise BadMedia(f"Discord sent me elsewhere for '{attachment.filename}', and I only "
                                   "fetch files from Discord's own file servers.")
                continue
            if r.status in (403, 404):
                raise BadMedia(f"Discord no longer has the file '{attachment.filename}'.")
            if r.status != 200:
                raise BadMedia(f"Discord would not give me '{attachment.filename}' (HTTP {r.status}).")
            data = bytearray()
            async for block in r.content.iter_chunked(2**16):
                data += block
                if len(data) > max_bytes:
                    raise _too_large(attachment.filename, len(data), max_bytes)
            return bytes(data)
    raise BadMedia(f"Discord kept redirecting the download of '{attachment.filename}'.")


def _too_large(name: str, size: int, max_bytes: int) -> LimitExceeded:
    return LimitExceeded(f"The file '{name}'", f"{size / 2**20:.1f}", f"{max_bytes / 2**20:.1f}", "MB",
                         status=413)
