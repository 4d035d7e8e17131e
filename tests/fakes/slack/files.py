"""Files on the Slack fake: hosted files and their objects (images, audio clips), the
files.getUploadURLExternal / upload / files.completeUploadExternal flow of `files_upload_v2`, the
share message it posts, and downloads that need the bot token (else Slack's sign-in page)."""

from __future__ import annotations

import asyncio
import copy
import mimetypes
import secrets
import time
import urllib.parse
from typing import Any, Optional

from aiohttp import web

from tests.fakes.slack.protocol import Call, SlackApiFailure, _parse_multipart, _rand_id, load_fixture

_LOGIN_PAGE = """<!DOCTYPE html>
<html lang="en-US"><head><meta charset="utf-8"><title>Slack</title></head>
<body class="signin"><h1>Sign in to your workspace</h1>
<form id="signin_form" action="/signin" method="post"><input type="email" name="email">
<input type="password" name="password"><button type="submit">Sign in</button></form>
</body></html>
"""


class Files:
    """File hosting, uploads and downloads of SlackFake."""

    _PATHS = [
        ("POST", "/upload/v1/{key}", "_handle_upload"),
        ("GET", "/files/{tf}/download/{name}", "_handle_file_download"),
        ("GET", "/files/{tf}/{name}", "_handle_file_download"),
    ]

    def redirect_download(self, file_id: str, location: str) -> None:
        """The next authenticated download of `file_id` answers 302 to `location`, as Slack does
        for some files (files.slack.com -> files-origin.slack.com on Enterprise Grid, a PDF's
        url_private -> slack-files.com)."""
        self._download_redirects.setdefault(file_id, []).append(location)

    def _file_urls(self, file_id: str, name: str) -> dict:
        quoted = urllib.parse.quote(name)
        base = f"{self.base_url}files/{self.team_id}-{file_id}"
        return {
            "url_private": f"{base}/{quoted}",
            "url_private_download": f"{base}/download/{quoted}",
            "permalink": f"https://{self.team_domain}.slack.com/files/{self.bot_user_id}/{file_id}/{quoted}",
            "permalink_public": f"https://slack-files.com/{self.team_id}-{file_id}-{secrets.token_hex(5)}",
        }

    def add_file(self, content: bytes, name: str, mimetype: str, subtype: Optional[str] = None, **extra: Any) -> dict:
        """Hosts `content` and returns the Slack file object for it (downloads need the bot token).

        `subtype="slack_audio"` builds an audio clip (see `audio_clip_file` for the usual way).
        Any key in `extra` overrides the file object (e.g. user="U2", duration_ms=1200).
        """
        file_id = extra.pop("id", None) or _rand_id("F")
        now = int(time.time())
        ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
        if subtype == "slack_audio":
            f = load_fixture("file_slack_audio")
            f["filetype"] = {"audio/mp4": "m4a", "audio/webm": "webm"}.get(mimetype, ext or "webm")
            f["pretty_type"] = {"m4a": "MPEG 4 Audio", "webm": "WebM"}.get(f["filetype"], f["filetype"].upper())
            f["aac"] = f"{self.base_url}files/{self.team_id}-{file_id}/download/file.aac"
            f["vtt"] = f"{self.base_url}files/{self.team_id}-{file_id}/download/file.vtt"
        elif mimetype.startswith("image/"):
            f = load_fixture("file_image")
            f["filetype"] = ext or mimetype.split("/", 1)[1]
            f["pretty_type"] = f["filetype"].upper()
            for k in list(f):
                if k.startswith("thumb_") and isinstance(f[k], str) and k != "thumb_tiny":
                    f[k] = f"{self.base_url}files/{self.team_id}-{file_id}/download/{urllib.parse.quote(name)}"
        else:
            f = load_fixture("file_image")
            for k in [k for k in f if k.startswith("thumb_") or k.startswith("original_")]:
                del f[k]
            f["filetype"] = ext or "binary"
            f["pretty_type"] = f["filetype"].upper()
        f.update({
            "id": file_id, "created": now, "timestamp": now, "name": name, "title": name,
            "mimetype": mimetype, "size": len(content), "user": extra.get("user", "U1"),
            "user_team": self.team_id,
        })
        if subtype is not None:
            f["subtype"] = subtype
        f.update(self._file_urls(file_id, name))
        f.update(extra)
        self.files[file_id] = f
        self.file_contents[file_id] = bytes(content)
        return copy.deepcopy(f)

    def audio_clip_file(self, content: bytes, *, mimetype: str = "audio/webm", duration_ms: int = 3000,
                        user: str = "U1", transcript: Optional[str] = None, samples: int = 100, **extra: Any) -> dict:
        """A Slack audio clip (subtype slack_audio) as Slack puts it in a message's files[]."""
        if mimetype not in ("audio/webm", "audio/mp4"):
            raise ValueError("Slack records clips as audio/webm or audio/mp4")
        name = "audio_message.webm" if mimetype == "audio/webm" else "audio_message.m4a"
        wave = [int(50 + 45 * ((i * 37) % 11) / 10) % 101 for i in range(samples)]
        transcription = ({"status": "complete", "locale": "en-US",
                          "preview": {"content": transcript, "has_more": False}}
                         if transcript is not None else {"status": "processing"})
        return self.add_file(content, extra.pop("name", name), mimetype, "slack_audio", duration_ms=duration_ms,
                             audio_wave_samples=wave, transcription=transcription, user=user, **extra)

    def image_file(self, content: bytes, name: str = "image.png", mimetype: str = "image/png",
                   user: str = "U1", **extra: Any) -> dict:
        return self.add_file(content, name, mimetype, user=user, **extra)

    def _api_files_info(self, params: dict, request: web.Request) -> dict:
        fid = params.get("file")
        if not fid or fid not in self.files:
            raise SlackApiFailure("file_not_found")
        return {"file": copy.deepcopy(self.files[fid]), "comments": [], "response_metadata": {"next_cursor": ""}}

    def _api_files_getUploadURLExternal(self, params: dict, request: web.Request) -> dict:
        filename = params.get("filename")
        length = params.get("length")
        if not filename:
            raise SlackApiFailure("invalid_arguments", "[ERROR] missing required field: filename")
        try:
            n = int(length)
        except (TypeError, ValueError):
            raise SlackApiFailure("invalid_arguments", "[ERROR] missing required field: length")
        if n <= 0:
            raise SlackApiFailure("missing_argument")
        alt = params.get("alt_txt")
        if alt and len(alt) > 1000:
            raise SlackApiFailure("alt_txt_too_large")
        file_id = _rand_id("F")
        key = secrets.token_urlsafe(24)
        self.uploads[key] = {"file_id": file_id, "filename": filename, "length": n, "alt_txt": alt,
                             "snippet_type": params.get("snippet_type"), "data": None, "completed": False}
        return {"upload_url": f"{self.base_url}upload/v1/{key}", "file_id": file_id}

    async def _handle_upload(self, request: web.Request) -> web.StreamResponse:
        key = request.match_info["key"]
        raw = await request.read()
        call = Call(method="upload", params={}, headers=dict(request.headers), time=time.time(),
                    http_method="POST", path=request.path_qs, body=raw,
                    content_type=request.headers.get("Content-Type", ""))
        self.calls.append(call)
        try:
            up = self.uploads.get(key)
            if up is None or up["completed"]:
                call.status = 404
                call.response = "not found"
                return web.Response(status=404, text="not found")
            data = raw
            ctype = request.headers.get("Content-Type", "")
            if ctype.lower().startswith("multipart/form-data"):
                parts = _parse_multipart(ctype, raw)
                with_file = [p for p in parts if p[1]] or [p for p in parts if p[0] in ("file", "filename")]
                data = with_file[0][2] if with_file else b""
            up["data"] = bytes(data)
            call.params = {"file_id": up["file_id"], "size": len(data)}
            if len(data) != up["length"]:
                self._problem(f"upload of {up['filename']}: {len(data)} bytes sent, {up['length']} announced")
            call.response = f"OK - {len(data)}"
            return web.Response(status=200, text=f"OK - {len(data)}", content_type="text/plain")
        finally:
            self._notify()

    def _api_files_completeUploadExternal(self, params: dict, request: web.Request) -> dict:
        files = self._json_arg(params.get("files"), "files")
        if not isinstance(files, list) or not files:
            raise SlackApiFailure("invalid_arguments", "[ERROR] missing required field: files")
        channel_ids: list = []
        if params.get("channel_id"):
            channel_ids.append(params["channel_id"])
        if params.get("channels"):
            channel_ids.extend(c for c in str(params["channels"]).split(",") if c)
        thread_ts = params.get("thread_ts")
        if thread_ts and len(channel_ids) != 1:
            raise SlackApiFailure("invalid_arguments", "[ERROR] thread_ts needs exactly one channel")
        chans = []
        for cid in channel_ids:
            ch = self.channels.get(cid)
            if ch is None and cid in self.users:
                ch = self.channels[self.im_with(cid)]
            if ch is None:
                raise SlackApiFailure("invalid_channel")
            if self.bot_user_id not in ch["members"] or ch["is_archived"]:
                raise SlackApiFailure("posting_to_channel_denied")
            chans.append(ch)
        pending = []
        for f in files:
            if not isinstance(f, dict) or not f.get("id"):
                raise SlackApiFailure("invalid_arguments", "[ERROR] each file needs an id")
            up = next((u for u in self.uploads.values() if u["file_id"] == f["id"]), None)
            if up is None or up["data"] is None or up["completed"]:
                raise SlackApiFailure("file_not_found")
            pending.append((f, up))
        out = []
        for f, up in pending:
            up["completed"] = True
            mimetype = mimetypes.guess_type(up["filename"])[0] or "application/octet-stream"
            obj = self.add_file(up["data"], up["filename"], mimetype, id=up["file_id"], user=self.bot_user_id,
                                title=f.get("title") or up["filename"], is_public=bool(chans) and all(
                                    not c["is_private"] for c in chans))
            obj.update({"shares": {}, "channels": [], "groups": [], "ims": [], "comments_count": 0})
            if up.get("alt_txt"):
                obj["alt_txt"] = up["alt_txt"]
            self.files[up["file_id"]].update({"shares": {}, "channels": [], "groups": [], "ims": []})
            out.append(obj)
        if chans:
            file_ids = [o["id"] for o in out]
            initial_comment = params.get("initial_comment") or ""
            blocks = params.get("blocks") if not initial_comment else None
            tts = None
            if thread_ts:
                tts, orphan = self._thread_parent(chans[0], thread_ts)
                if orphan:
                    tts = str(thread_ts)

            async def share_later() -> None:
                await asyncio.sleep(self.share_delay)
                for ch in chans:
                    self._share_files(ch, file_ids, initial_comment, tts, blocks)

            self._spawn(share_later())
        return {"files": out}

    def _share_files(self, ch: dict, file_ids: list, initial_comment: str, thread_ts: Optional[str],
                     blocks: Any) -> None:
        ts = self.new_ts()
        files = []
        for fid in file_ids:
            f = self.files[fid]
            key = "private" if ch["is_private"] else "public"
            share = {"reply_users": [], "reply_users_count": 0, "reply_count": 0, "ts": ts,
                     "channel_name": ch["name"] or "", "team_id": self.team_id, "share_user_id": self.bot_user_id,
                     "source": "UNKNOWN"}
            if thread_ts:
                share["thread_ts"] = thread_ts
            f.setdefault("shares", {}).setdefault(key, {}).setdefault(ch["id"], []).append(share)
            bucket = "ims" if ch["is_im"] else ("groups" if ch["is_private"] else "channels")
            f.setdefault(bucket, []).append(ch["id"])
            files.append(copy.deepcopy({k: v for k, v in f.items()
                                        if k not in ("shares", "channels", "groups", "ims")}))
        content: dict = {"text": initial_comment, "files": files, "upload": True, "display_as_bot": False}
        if blocks:
            try:
                content["blocks"] = self._json_arg(blocks, "blocks")
            except SlackApiFailure:
                pass
        msg = self._bot_message(ch["id"], content, ts)
        if thread_ts:
            msg["thread_ts"] = thread_ts
        if thread_ts and self._find_message(ch["id"], thread_ts) is None:
            msg["_orphan"] = True
            self.orphans.append(self._public(msg) | {"channel": ch["id"]})
            self._messages[ch["id"]].append(dict(msg, _channel=ch["id"]))
            self._notify()
            return
        stored = self._store_message(ch["id"], msg)
        ev = self._message_event_of(stored)
        ev["subtype"] = "file_share"
        self._emit_event(ev)

    async def _handle_file_download(self, request: web.Request) -> web.StreamResponse:
        tf = request.match_info["tf"]
        fid = tf.split("-", 1)[1] if "-" in tf else tf
        auth = request.headers.get("Authorization", "")
        token = auth[len("Bearer "):].strip() if auth.startswith("Bearer ") else None
        authed = token == self.bot_token
        call = Call(method="files.download", params={"file": fid, "authed": authed, "name": request.match_info["name"]},
                    headers=dict(request.headers), time=time.time(), http_method="GET", path=request.path_qs)
        self.calls.append(call)
        try:
            if not authed:
                # What Slack does: no error status, an HTML sign-in page with 200.
                if token is None:
                    self._problem(f"download of {fid} without Authorization: got the HTML login page")
                else:
                    self._problem(f"download of {fid} with a token that is not the bot token: got the login page")
                call.response = "login page"
                return web.Response(status=200, text=_LOGIN_PAGE, content_type="text/html", charset="utf-8")
            if self._download_redirects.get(fid):
                call.status = 302
                call.response = "redirect"
                raise web.HTTPFound(self._download_redirects[fid].pop(0))
            if fid not in self.file_contents:
                call.status = 404
                call.response = "not found"
                return web.Response(status=404, text="File not found", content_type="text/html")
            f = self.files[fid]
            data = self.file_contents[fid]
            name = request.match_info["name"]
            ctype = f.get("mimetype") or "application/octet-stream"
            if name == "file.aac":
                ctype = "audio/aac"
            elif name == "file.vtt":
                ctype = "text/vtt"
                data = b"WEBVTT\n\n00:00.000 --> 00:01.000\n" + (
                    f.get("transcription", {}).get("preview", {}).get("content", "").encode("utf-8"))
            call.response = {"bytes": len(data)}
            headers = {"Cache-Control": "private, no-cache"}
            if "/download/" in request.path:
                headers["Content-Disposition"] = f'attachment; filename="{f["name"]}"'
            return web.Response(status=200, body=data, content_type=ctype, headers=headers)
        finally:
            self._notify()
