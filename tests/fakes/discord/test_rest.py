"""The Discord fake's REST API is as strict as Discord's, with plain aiohttp."""

from __future__ import annotations

import base64
import json

import aiohttp
import pytest

from tests.fakes.discord.conftest import AUTH, OGG, png
from tests.fakes.discord.protocol import ErrorCode

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(25)]


async def test_rest_is_as_strict_as_discord(fake):
    api = fake.api_base
    cid = fake.channel_id
    # Refused requests count against a bucket too; loosen it for the validation checks.
    fake.bucket_config["POST /channels/{channel_id}/messages"] = (100, 5.0)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{api}/users/@me", headers={**AUTH, "Authorization": "Bot wrong"}) as r:
            assert r.status == 401 and await r.json() == {"message": "401: Unauthorized", "code": 0}
        async with http.get(f"{api}/users/@me", headers=AUTH) as r:
            assert r.status == 200 and r.headers["Content-Type"] == "application/json"
            assert (await r.json())["id"] == fake.bot_user_id
            assert r.headers["X-RateLimit-Limit"] and r.headers["X-RateLimit-Bucket"]
        async with http.get(f"{api}/nope", headers=AUTH) as r:
            assert r.status == 404
        async with http.put(f"{api}/users/@me", headers=AUTH) as r:
            assert r.status == 405

        async def post(path, body=None, data=None, status=200, code=None):
            async with http.post(f"{api}{path}", json=body, data=data, headers=AUTH) as r:
                got = await r.json() if r.content_length != 0 and r.status != 204 else None
                assert r.status == status, (path, r.status, got)
                if code is not None:
                    assert got["code"] == code, got
                return got

        err = await post(f"/channels/{cid}/messages", {"content": "x" * 2001}, status=400,
                         code=ErrorCode.INVALID_FORM_BODY)
        assert err["errors"]["content"]["_errors"][0]["code"] == "BASE_TYPE_MAX_LENGTH"
        await post(f"/channels/{cid}/messages", {"content": "  "}, status=400, code=ErrorCode.EMPTY_MESSAGE)
        await post("/channels/1/messages", {"content": "hi"}, status=404, code=ErrorCode.UNKNOWN_CHANNEL)
        await post(f"/channels/{cid}/messages", {"content": "hi", "message_reference": {"message_id": "1"}},
                   status=400, code=ErrorCode.INVALID_FORM_BODY)
        sent = await post(f"/channels/{cid}/messages", {"content": "x" * 2000})
        assert sent["author"]["id"] == fake.bot_user_id

        # Voice messages: no content, one audio attachment with duration_secs + waveform.
        wave = base64.b64encode(bytes(range(50))).decode()

        def voice_form(payload, files=(("voice-message.ogg", OGG),)):
            form = aiohttp.FormData(quote_fields=False)
            form.add_field("payload_json", json.dumps(payload))
            for i, (name, blob) in enumerate(files):
                form.add_field(f"files[{i}]", blob, filename=name, content_type="application/octet-stream")
            return form

        voice_att = {"id": 0, "filename": "voice-message.ogg", "duration_secs": 1.5, "waveform": wave}
        vpath = f"/channels/{cid}/messages"
        await post(vpath, data=voice_form({"flags": 8192, "content": "hi", "attachments": [voice_att]}),
                   status=400, code=ErrorCode.VOICE_MESSAGE_ADDITIONAL_CONTENT)
        await post(vpath, data=voice_form({"flags": 8192, "attachments": [
            {"id": 0, "filename": "x.png", "duration_secs": 1.5, "waveform": wave}]}, files=[("x.png", png())]),
            status=400, code=ErrorCode.VOICE_MESSAGE_SINGLE_AUDIO_ATTACHMENT)
        await post(vpath, data=voice_form({"flags": 8192, "attachments": [{"id": 0, "filename": "voice-message.ogg"}]}),
                   status=400, code=ErrorCode.VOICE_MESSAGE_METADATA)
        big_wave = base64.b64encode(bytes(300)).decode()
        await post(vpath, data=voice_form({"flags": 8192, "attachments": [dict(voice_att, waveform=big_wave)]}),
                   status=400, code=ErrorCode.INVALID_FORM_BODY)
        voice = await post(vpath, data=voice_form({"flags": 8192, "attachments": [voice_att]}))
        assert voice["flags"] == 8192 and voice["attachments"][0]["content_type"] == "audio/ogg"
        assert fake.find("POST", vpath, status=200)[-1].files[0].data == OGG
        async with http.patch(f"{api}/channels/{cid}/messages/{voice['id']}", json={"content": "x"},
                              headers=AUTH) as r:
            assert r.status == 400 and (await r.json())["code"] == ErrorCode.VOICE_MESSAGE_CANNOT_BE_EDITED
        async with http.patch(f"{api}/channels/{cid}/messages/1", json={"content": "x"}, headers=AUTH) as r:
            assert r.status == 404 and (await r.json())["code"] == ErrorCode.UNKNOWN_MESSAGE
        user_msg = fake.message_create_guild("mine")
        async with http.patch(f"{api}/channels/{cid}/messages/{user_msg['id']}", json={"content": "x"},
                              headers=AUTH) as r:
            assert r.status == 403 and (await r.json())["code"] == ErrorCode.CANNOT_EDIT_OTHERS_MESSAGE

        # Attachment URLs are signed like Discord's CDN.
        url = voice["attachments"][0]["url"]
        async with http.get(url) as r:
            assert r.status == 200 and await r.read() == OGG and r.headers["Content-Type"] == "audio/ogg"
        async with http.get(url.split("?")[0]) as r:
            assert r.status == 404

        # 429 with everything discord.py looks at.
        fake.rate_limit(f"/channels/{cid}/typing", retry_after=0.25)
        async with http.post(f"{api}/channels/{cid}/typing", headers=AUTH) as r:
            assert r.status == 429 and r.headers["Content-Type"] == "application/json"
            assert await r.json() == {"message": "You are being rate limited.", "retry_after": 0.25, "global": False}
            assert r.headers["Via"] and r.headers["Retry-After"] == "1"
            assert r.headers["X-RateLimit-Remaining"] == "0" and r.headers["X-RateLimit-Scope"] == "user"
        async with http.post(f"{api}/channels/{cid}/typing", headers=AUTH) as r:
            assert r.status == 204

        # A client that ignores the rate-limit headers gets a real 429 (5 per 5 s per channel).
        fake.bucket_config["POST /channels/{channel_id}/messages"] = (5, 5.0)
        other = fake.add_text_channel("flood")["id"]
        statuses = []
        for i in range(6):
            async with http.post(f"{api}/channels/{other}/messages", json={"content": str(i)}, headers=AUTH) as r:
                statuses.append(r.status)
                if r.status == 200:
                    remaining = r.headers["X-RateLimit-Remaining"]
        assert statuses == [200] * 5 + [429] and remaining == "0"

        # Interactions: one response only, within the deadline; follow-ups need it acknowledged.
        fake.global_commands = [fake._command_object({"name": "ask", "description": "Ask"}, None, None)]
        inter = fake.interaction_command("ask")
        cb = f"{api}/interactions/{inter['id']}/{inter['token']}/callback"
        hook = f"{api}/webhooks/{fake.application_id}/{inter['token']}"
        async with http.post(hook, json={"content": "early"}) as r:
            assert r.status == 404 and (await r.json())["code"] == ErrorCode.UNKNOWN_WEBHOOK
        async with http.post(cb + "?with_response=1", json={"type": 4, "data": {"content": "hello"}}) as r:
            body = await r.json()
            assert r.status == 200 and body["interaction"]["id"] == inter["id"]
            assert body["resource"]["type"] == 4 and body["resource"]["message"]["content"] == "hello"
        async with http.post(cb, json={"type": 4, "data": {"content": "again"}}) as r:
            assert r.status == 400 and (await r.json()) == {
                "message": "Interaction has already been acknowledged.", "code": 40060}
        async with http.patch(hook + "/messages/@original", json={"content": "edited"}) as r:
            assert r.status == 200 and (await r.json())["content"] == "edited"
        async with http.post(hook, json={"content": "more"}) as r:
            assert r.status == 200 and (await r.json())["content"] == "more"
        late = fake.interaction_command("ask")
        fake.interactions[late["token"]].created_at -= 4
        async with http.post(f"{api}/interactions/{late['id']}/{late['token']}/callback", json={"type": 5}) as r:
            assert r.status == 404 and (await r.json())["code"] == ErrorCode.UNKNOWN_INTERACTION
