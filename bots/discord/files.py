"""Attachments in: downloaded only from Discord's file hosts (and the REST host Confab was told
to use), within a size limit and a time bound. Images are handed to the shared image commands
as `DiscordFile`s, which fetch the same way."""
from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import discord

from engine import BadMedia, LimitExceeded

DISCORD_FILE_HOSTS = ("cdn.discordapp.com", "media.discordapp.net")
IMAGE_NAMES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp")
DOWNLOAD_TIMEOUT_S = 60.0


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
    if not may_download(attachment.url, api_url):
        raise BadMedia(f"I only fetch files from Discord's own file servers, and "
                       f"'{attachment.filename}' is somewhere else.")
    if attachment.size > max_bytes:
        raise LimitExceeded(f"The file '{attachment.filename}'", f"{attachment.size / 2**20:.1f}",
                            f"{max_bytes / 2**20:.1f}", "MB", status=413)
    try:
        data = await asyncio.wait_for(attachment.read(), timeout)
    except asyncio.TimeoutError:
        raise BadMedia(f"Downloading '{attachment.filename}' took longer than {timeout:g} s.") from None
    except (discord.NotFound, discord.Forbidden):
        raise BadMedia(f"Discord no longer has the file '{attachment.filename}'.") from None
    if len(data) > max_bytes:
        raise LimitExceeded(f"The file '{attachment.filename}'", f"{len(data) / 2**20:.1f}",
                            f"{max_bytes / 2**20:.1f}", "MB", status=413)
    return data
