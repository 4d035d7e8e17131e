"""Files people share with Confab: what each one is, and fetching it from Slack with the bot token.

Only Slack's own file hosts are fetched (files.slack.com, GovSlack's, or the host of
CONFAB_SLACK_API_URL), so a crafted file object cannot make Confab send its token elsewhere.
Slack answers an unauthenticated download with a 200 HTML sign-in page, not an error: that
page is refused here, never handed on as audio. Slack may redirect a download (Enterprise Grid
sends files.slack.com on to files-origin.slack.com); redirects are followed by hand, a few
hops, and only to those same hosts, so the token never follows one off Slack.
"""
from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

import aiohttp

from engine import BadMedia

SLACK_FILE_HOSTS = ("files.slack.com", "files-origin.slack.com", "files-edu.slack.com",
                    "files.slack-gov.com")
MAX_REDIRECTS = 3
REDIRECTS = (301, 302, 303, 307, 308)
TEXT_TYPES = {"text", "markdown", "python", "javascript", "json", "yaml", "csv", "shell", "xml",
              "html", "css", "sql", "go", "rust", "java", "c", "cpp", "typescript"}
MAX_TEXT_FILE_BYTES = 64 * 1024


@dataclass(frozen=True)
class SharedFile:
    id: str
    name: str
    mimetype: str
    filetype: str
    size: int
    url: str
    is_clip: bool           # a Slack audio clip (subtype slack_audio)
    duration_ms: int = 0

    @classmethod
    def of(cls, f: dict) -> "SharedFile":
        return cls(id=f.get("id", ""), name=f.get("name") or f.get("title") or "file",
                   mimetype=f.get("mimetype") or "", filetype=f.get("filetype") or "",
                   size=int(f.get("size") or 0),
                   url=f.get("url_private_download") or f.get("url_private") or "",
                   is_clip=f.get("subtype") == "slack_audio", duration_ms=int(f.get("duration_ms") or 0))

    @property
    def kind(self) -> str:
        """audio, image, text or other."""
        if self.is_clip or self.mimetype.startswith("audio/"):
            return "audio"
        if self.mimetype.startswith("image/"):
            return "image"
        if self.mimetype.startswith("text/") or self.filetype in TEXT_TYPES:
            return "text"
        return "other"


class SlackFiles:
    def __init__(self, token: str, api_url: str = ""):
        self.token = token
        self.hosts = set(SLACK_FILE_HOSTS)
        self.allow_http = False
        if api_url:
            parsed = urllib.parse.urlsplit(api_url)
            self.hosts.add(parsed.netloc)
            self.allow_http = parsed.scheme == "http"
        self._session: aiohttp.ClientSession | None = None

    def from_slack(self, url: str) -> bool:
        parsed = urllib.parse.urlsplit(url)
        scheme_ok = parsed.scheme == "https" or (self.allow_http and parsed.scheme == "http")
        return scheme_ok and parsed.netloc in self.hosts

    async def download(self, f: SharedFile, max_bytes: int) -> bytes:
        if not f.url or not self.from_slack(f.url):
            raise BadMedia(f"I can only read files stored in Slack, and {f.name} is not.")
        if f.size > max_bytes:
            raise BadMedia(f"{f.name} is {f.size / 2**20:.1f} MB; I read files up to "
                           f"{max_bytes / 2**20:.0f} MB.")
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        url = f.url
        for _ in range(MAX_REDIRECTS + 1):
            async with self._session.get(url, headers={"Authorization": f"Bearer {self.token}"},
                                         allow_redirects=False) as r:
                if r.status in REDIRECTS:
                    url = urllib.parse.urljoin(url, r.headers.get("Location", ""))
                    if not self.from_slack(url):
                        raise BadMedia(f"Slack sent me elsewhere for {f.name}, and I only read files "
                                       "stored in Slack.")
                    continue
                return await self._body(r, f, max_bytes)
        raise BadMedia(f"Slack kept redirecting the download of {f.name}.")

    @staticmethod
    async def _body(r: aiohttp.ClientResponse, f: SharedFile, max_bytes: int) -> bytes:
        if r.status != 200:
            raise BadMedia(f"Slack would not give me {f.name} (HTTP {r.status}).")
        if r.content_type == "text/html" and not f.mimetype.startswith("text/html"):
            raise BadMedia(f"Slack sent a sign-in page instead of {f.name}: the app needs the "
                           "files:read scope (reinstall it from the manifest).")
        data = bytearray()
        async for block in r.content.iter_chunked(2**16):
            data += block
            if len(data) > max_bytes:
                raise BadMedia(f"{f.name} is larger than the {max_bytes / 2**20:.0f} MB I read.")
        return bytes(data)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class SlackAttachment:
    """A shared file as `Request.attachments` holds it (see bots/common/image_commands.py):
    its name, mimetype and size, and `read()`, which downloads it with the bot token."""

    def __init__(self, files: SlackFiles, f: SharedFile, max_bytes: int):
        self.files, self.file, self.max_bytes = files, f, max_bytes
        self.name, self.mimetype, self.size = f.name, f.mimetype, f.size

    async def read(self) -> bytes:
        return await self.files.download(self.file, self.max_bytes)
