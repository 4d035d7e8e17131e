"""The Slack fake's files, driven by the real slack-sdk: files_upload_v2 and authenticated downloads."""

from __future__ import annotations

import aiohttp
import pytest

from tests.fakes.slack import SlackFake
from tests.fakes.slack.conftest import PNG, api_error, client_for

pytestmark = pytest.mark.timeout(30)


@pytest.mark.asyncio
async def test_files_upload_v2_and_private_download(fake: SlackFake):
    client = client_for(fake)
    parent = fake.message_event("draw me a cat", channel="C1")
    r = await client.files_upload_v2(channel="C1", thread_ts=parent["ts"], content=PNG, filename="cat.png",
                                     title="A cat", initial_comment="here you go")
    f = r["file"]
    assert f["name"] == "cat.png" and f["mimetype"] == "image/png" and f["title"] == "A cat"
    assert f["shares"] == {}  # as on Slack: sharing happens after the call returns
    upload = await fake.wait_for("upload", timeout=2)
    assert upload.body == PNG and "Authorization" not in upload.headers
    done = await fake.wait_for("files.completeUploadExternal", timeout=2)
    assert done.params["channel_id"] == "C1" and done.params["thread_ts"] == parent["ts"]
    assert done.params["initial_comment"] == "here you go"

    msg = await fake.wait_message("C1", lambda m: m.get("files"), thread_ts=parent["ts"], timeout=2)
    assert msg["text"] == "here you go" and msg["files"][0]["id"] == f["id"]
    info = await client.files_info(file=f["id"])
    assert info["file"]["shares"]["public"]["C1"][0]["thread_ts"] == parent["ts"]
    assert fake.file_contents[f["id"]] == PNG

    url = f["url_private_download"]
    assert url.startswith(fake.base_url + "files/")
    async with aiohttp.ClientSession() as s:
        async with s.get(url) as resp:  # no token: Slack answers 200 with its HTML login page
            assert resp.status == 200 and resp.content_type == "text/html"
            assert b"Sign in" in await resp.read()
        async with s.get(url, headers={"Authorization": "Bearer xoxb-other"}) as resp:
            assert resp.content_type == "text/html"
        async with s.get(url, headers={"Authorization": f"Bearer {fake.bot_token}"}) as resp:
            assert resp.status == 200 and resp.content_type == "image/png" and await resp.read() == PNG

    # the upload URL also takes multipart, as Slack's does
    url_r = await client.files_getUploadURLExternal(filename="note.txt", length=5)
    form = aiohttp.FormData()
    form.add_field("filename", b"hello", filename="note.txt", content_type="text/plain")
    async with aiohttp.ClientSession() as s:
        async with s.post(url_r["upload_url"], data=form) as resp:
            assert resp.status == 200 and await resp.text() == "OK - 5"
    done = await client.files_completeUploadExternal(files=[{"id": url_r["file_id"], "title": "note"}])
    assert done["files"][0]["id"] == url_r["file_id"] and fake.file_contents[url_r["file_id"]] == b"hello"

    # an upload that was never sent cannot be completed
    url_r = await client.files_getUploadURLExternal(filename="x.txt", length=3)
    assert await api_error(client.files_completeUploadExternal(files=[{"id": url_r["file_id"]}])) == "file_not_found"
