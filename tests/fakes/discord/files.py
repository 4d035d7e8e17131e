"""Files on the Discord fake: attachments on a CDN whose URLs are signed (`ex`/`is`/`hm`) as
Discord's are, the upload-URL flow (POST .../attachments, then PUT the bytes), and the
attachments of a message body (multipart `files[n]` or uploaded files)."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import mimetypes
import re
import secrets
import struct
import time
import uuid
from typing import Any, Dict, List, Optional, Tuple, Union

from aiohttp import web

from tests.fakes.discord.protocol import ErrorCode, RecordedFile, RecordedRequest, _error, _form_error


def _image_size(data: bytes) -> Optional[Tuple[int, int]]:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])
    if data[:2] == b"\xff\xd8":  # JPEG: walk the segments to a SOFn marker
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                return None
            marker, length = data[i + 1], struct.unpack(">H", data[i + 2:i + 4])[0]
            if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
                h, w = struct.unpack(">HH", data[i + 5:i + 9])
                return w, h
            i += 2 + length
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and data[12:16] == b"VP8X" and len(data) >= 30:
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
        return w, h
    return None


def _guess_content_type(filename: str) -> str:
    ctype, _ = mimetypes.guess_type(filename)
    if filename.lower().endswith(".ogg"):
        ctype = "audio/ogg"
    return ctype or "application/octet-stream"


@dataclasses.dataclass
class _StoredAttachment:
    id: str
    channel_id: str
    filename: str
    content_type: str
    data: bytes


@dataclasses.dataclass
class _Upload:
    upload_filename: str
    filename: str
    file_size: int
    data: Optional[bytes] = None


class Files:
    """Attachments, uploads and the CDN of DiscordFake."""

    _PATHS = [
        ("GET", "/attachments/{channel_id}/{attachment_id}/{filename}", "_cdn_entry"),
        ("GET", "/media/attachments/{channel_id}/{attachment_id}/{filename}", "_cdn_entry"),
        ("PUT", "/upload/{upload_filename:.+}", "_upload_entry"),
    ]

    def _cdn_urls(self, channel_id: str, attachment_id: str, filename: str) -> Tuple[str, str]:
        now = int(time.time())
        ex, is_ = format(now + 86400, "x"), format(now, "x")
        path = f"/attachments/{channel_id}/{attachment_id}/{filename}"
        hm = hmac.new(self._secret, f"{path}|{ex}|{is_}".encode(), hashlib.sha256).hexdigest()
        query = f"?ex={ex}&is={is_}&hm={hm}&"
        return f"{self.base_url}{path}{query}", f"{self.base_url}/media{path}{query}"

    def redirect_attachment(self, attachment_id: str, location: str) -> None:
        """The next download of the attachment answers 302 to ``location`` (a CDN may move a file)."""
        self.attachment_redirects[str(attachment_id)] = location

    def add_attachment(self, content: bytes, filename: str, content_type: Optional[str] = None, *,
                       channel_id: Optional[str] = None, **extra: Any) -> dict:
        """Store ``content`` on the fake CDN and return a Discord attachment object for it.

        ``extra`` fields are added as given (``duration_secs``, ``waveform``, ``description``,
        ``width``/``height`` ...).  Image width/height are read from PNG/JPEG/GIF/WebP data
        when not given, as Discord always sends them for images.
        """
        if self.port is None:
            raise RuntimeError("start the fake before adding attachments (their URLs name its port)")
        channel_id = channel_id or self.channel_id
        att_id = self._snowflake()
        ctype = content_type or _guess_content_type(filename)
        self.attachments[att_id] = _StoredAttachment(att_id, channel_id, filename, ctype, bytes(content))
        url, proxy_url = self._cdn_urls(channel_id, att_id, filename)
        att: Dict[str, Any] = {
            "id": att_id,
            "filename": filename,
            "size": len(content),
            "url": url,
            "proxy_url": proxy_url,
            "content_type": ctype,
            "content_scan_version": 0,
        }
        if ctype.startswith("image/") and "width" not in extra:
            size = _image_size(content)
            if size:
                att["width"], att["height"] = size
                att["placeholder_version"] = 1
        att.update(extra)
        return att

    def attachment_bytes(self, attachment: Union[dict, str]) -> bytes:
        att_id = attachment["id"] if isinstance(attachment, dict) else attachment
        return self.attachments[str(att_id)].data

    async def _h_upload_slots(self, request, params, body, rec):
        """POST /channels/{id}/attachments: the upload-URL flow Discord's clients use for
        voice messages (not in the public docs).  Answers loopback ``upload_url``s."""
        self._channel_or_404(params["channel_id"])
        files = (body or {}).get("files")
        if not isinstance(files, list) or not files:
            raise _form_error(["files"], "BASE_TYPE_REQUIRED", "This field is required")
        out = []
        for i, f in enumerate(files):
            if not isinstance(f, dict) or not f.get("filename") or not isinstance(f.get("file_size"), int):
                raise _form_error(["files", i], "BASE_TYPE_REQUIRED", "filename and file_size are required")
            if f["file_size"] > self.upload_limit:
                raise _error(413, ErrorCode.REQUEST_ENTITY_TOO_LARGE, "Request entity too large")
            upload_filename = f"{uuid.uuid4()}/{f['filename']}"
            self.uploads[upload_filename] = _Upload(upload_filename, f["filename"], f["file_size"])
            out.append({"id": int(f.get("id", i)) if str(f.get("id", i)).isdigit() else f.get("id"),
                        "upload_url": f"{self.base_url}/upload/{upload_filename}?upload_id={secrets.token_hex(16)}",
                        "upload_filename": upload_filename})
        return 200, {"attachments": out}

    async def _upload_entry(self, request: web.Request) -> web.Response:
        data = await request.read()
        rec = RecordedRequest(index=len(self.requests), method=request.method, path=request.path,
                              query=dict(request.query), headers=dict(request.headers), raw=data)
        upload = self.uploads.get(request.match_info["upload_filename"])
        if upload is None or "upload_id" not in request.query:
            rec.status = 404
            resp = web.Response(status=404, text="No such upload.")
        elif len(data) != upload.file_size:
            rec.status = 400
            resp = web.Response(status=400, text="Content length does not match the declared file_size.")
        else:
            upload.data = data
            rec.status = 200
            resp = web.Response(status=200)
        self.requests.append(rec)
        self._touch()
        return resp

    async def _cdn_entry(self, request: web.Request) -> web.Response:
        await self._wait_if_held(request)
        rec = RecordedRequest(index=len(self.requests), method=request.method, path=request.path,
                              query=dict(request.query), headers=dict(request.headers))
        mi = request.match_info
        path = f"/attachments/{mi['channel_id']}/{mi['attachment_id']}/{mi['filename']}"
        q = request.query
        stored = self.attachments.get(mi["attachment_id"])
        redirect = self.attachment_redirects.pop(mi["attachment_id"], None)
        if redirect is not None:
            rec.status = 302
            self.requests.append(rec)
            self._touch()
            return web.Response(status=302, headers={"Location": redirect})
        ok = False
        if stored is not None and stored.channel_id == mi["channel_id"] and stored.filename == mi["filename"]:
            ex, is_, hm = q.get("ex", ""), q.get("is", ""), q.get("hm", "")
            want = hmac.new(self._secret, f"{path}|{ex}|{is_}".encode(), hashlib.sha256).hexdigest()
            try:
                ok = hmac.compare_digest(want, hm) and int(ex, 16) > time.time()
            except ValueError:
                ok = False
        if not ok:
            rec.status = 404
            resp = web.Response(status=404, text="This content is no longer available.")
        else:
            assert stored is not None
            rec.status = 200
            resp = web.Response(status=200, body=stored.data, headers={"Content-Type": stored.content_type})
        self.requests.append(rec)
        self._touch()
        return resp

    def _resolve_attachments(self, body: dict, files: List[RecordedFile], channel_id: str, *,
                             existing: Optional[dict], ephemeral: bool) -> List[dict]:
        by_index: Dict[str, RecordedFile] = {}
        for f in files:
            m = re.fullmatch(r"files\[(\d+)\]", f.field)
            key = m.group(1) if m else ("0" if f.field == "file" else f.field)
            by_index[key] = f
        if len(files) > 10:
            raise _form_error(["files"], "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
        if sum(len(f.data) for f in files) > self.upload_limit:
            raise _error(413, ErrorCode.REQUEST_ENTITY_TOO_LARGE, "Request entity too large")
        entries = body.get("attachments")
        kept_existing = {a["id"]: a for a in (existing or {}).get("attachments", [])}
        result: List[dict] = []
        used: set = set()
        if entries is None:
            result = list(kept_existing.values())
            entries = []
        if not isinstance(entries, list):
            raise _form_error(["attachments"], "LIST_TYPE_CONVERT", "Only iterables may be used in a ListType")
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or "id" not in entry:
                raise _form_error(["attachments", i, "id"], "BASE_TYPE_REQUIRED", "This field is required")
            aid = str(entry["id"])
            extra = {k: entry[k] for k in ("description", "duration_secs", "waveform", "title") if k in entry}
            if aid in by_index:
                f = by_index[aid]
                used.add(aid)
                result.append(self._new_attachment(f.data, entry.get("filename") or f.filename or "file", channel_id,
                                                   ephemeral, extra))
            elif entry.get("uploaded_filename"):
                upload = self.uploads.get(entry["uploaded_filename"])
                if upload is None or upload.data is None:
                    raise _error(400, ErrorCode.UPLOADED_FILE_NOT_FOUND, "Uploaded file not found.")
                del self.uploads[entry["uploaded_filename"]]
                result.append(self._new_attachment(upload.data, entry.get("filename") or upload.filename,
                                                   channel_id, ephemeral, extra))
            elif aid in kept_existing:
                result.append(kept_existing[aid])
            else:
                raise _form_error(["attachments", i, "id"], "ATTACHMENT_NOT_FOUND", "Unknown attachment")
        for key, f in by_index.items():
            if key not in used:
                result.append(self._new_attachment(f.data, f.filename or "file", channel_id, ephemeral, {}))
        if len(result) > 10:
            raise _form_error(["attachments"], "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
        return result

    def _new_attachment(self, data: bytes, filename: str, channel_id: str, ephemeral: bool, extra: dict) -> dict:
        ctype = _guess_content_type(filename)
        if not ctype.startswith("audio/"):
            # duration_secs / waveform are only kept for audio (docs: the attachment's
            # Content-Type must begin with audio/ for them to be respected).
            extra = {k: v for k, v in extra.items() if k not in ("duration_secs", "waveform")}
        att = self.add_attachment(data, filename, ctype, channel_id=channel_id, **extra)
        if ephemeral:
            att["ephemeral"] = True
        return att
