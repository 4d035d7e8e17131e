"""Messages on the Discord fake with the real discord.py client: attachments, edits, rate limits,
threads and role pings."""

from __future__ import annotations

import asyncio
import base64
import io
import time

import aiohttp
import discord
import discord.gateway
import discord.http
import pytest

from tests.fakes.discord.conftest import AUTH, OGG, T, from_user, next_item, png, running
from tests.fakes.discord.protocol import ErrorCode, Intents, MessageFlags

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(25)]


async def test_client_messages_attachments_edits_and_rate_limits(fake):
    async with running(fake) as bot:
        ident = fake.identify_payloads[0]
        assert fake.identify_count == 1 and ident["intents"] & Intents.MESSAGE_CONTENT
        assert fake.gateway_connections[0].compress == "zlib-stream"
        assert bot.user.id == int(fake.bot_user_id) and bot.application_id == int(fake.application_id)
        assert bot.get_channel(int(fake.channel_id)) is not None

        # A mention in a guild channel; the bot replies.
        await fake.dispatch("MESSAGE_CREATE", fake.message_create_mention("question"))
        msg = await next_item(bot.inbox, "on_message (mention)", from_user)
        assert msg.content == f"<@{fake.bot_user_id}> question" and bot.user in msg.mentions
        assert isinstance(msg.channel, discord.TextChannel) and msg.guild.id == int(fake.guild_id)
        reply = await msg.reply("pong")
        req = await fake.wait_for("POST", f"/channels/{fake.channel_id}/messages", timeout=T)
        assert str(req.json["message_reference"]["message_id"]) == str(msg.id)
        assert req.headers["Authorization"] == f"Bot {fake.token}"
        # Discord echoes the bot's own message back over the gateway.
        echo = await next_item(bot.inbox, "echo of the bot's reply", lambda m: m.author == bot.user)
        assert echo.id == reply.id and echo.reference.message_id == msg.id

        # Edit.
        draft = await msg.channel.send("draft")
        edited = await draft.edit(content="final")
        req = await fake.wait_for("PATCH", f"/messages/{draft.id}", timeout=T)
        assert req.json["content"] == "final" and edited.edited_at is not None
        assert fake.messages[str(draft.id)]["content"] == "final"

        # 429: discord.py waits retry_after and retries.
        fake.rate_limit(f"/channels/{fake.channel_id}/messages", times=1, retry_after=0.3, method="POST")
        started = time.monotonic()
        await msg.channel.send("after the limit")
        assert time.monotonic() - started >= 0.3
        limited = fake.find("POST", f"/channels/{fake.channel_id}/messages")[-2:]
        assert [r.status for r in limited] == [429, 200]

        # Typing, reactions, history, and an injected failure.
        async with msg.channel.typing():
            pass
        assert fake.typing[-1] == fake.channel_id
        await msg.add_reaction("\N{HOURGLASS}")
        assert fake.reactions[-1] == ("PUT", fake.channel_id, str(msg.id), "\N{HOURGLASS}")
        history = [m async for m in msg.channel.history(limit=3)]
        assert [m.content for m in history][0] == "after the limit" and len(history) == 3
        fake.fail_next(f"/channels/{fake.channel_id}/messages", 403,
                       {"message": "Missing Permissions", "code": 50013}, method="POST")
        with pytest.raises(discord.Forbidden):
            await msg.channel.send("refused")

        # A DM: discord.py resolves the DM channel from the message alone.
        await fake.dispatch("MESSAGE_CREATE", fake.message_create_dm("private question"))
        dm = await next_item(bot.inbox, "on_message (DM)", from_user)
        assert isinstance(dm.channel, discord.DMChannel) and dm.guild is None and dm.content == "private question"
        await dm.channel.send("private answer")
        await fake.wait_for("POST", f"/channels/{fake.dm_channel_id}/messages", timeout=T)

        # A reply from a user to the bot's message.
        await fake.dispatch("MESSAGE_CREATE", fake.message_create_reply("follow-up", fake.messages[str(reply.id)]))
        user_reply = await next_item(bot.inbox, "on_message (reply)", from_user)
        assert user_reply.reference.message_id == reply.id
        assert user_reply.reference.resolved.author == bot.user

        # An image attachment, downloaded with Attachment.read().
        image = png(5, 4)
        await fake.dispatch("MESSAGE_CREATE", fake.message_create_image(image, content="what is this?"))
        pic = await next_item(bot.inbox, "on_message (image)", from_user)
        (att,) = pic.attachments
        assert att.content_type == "image/png" and (att.width, att.height) == (5, 4)
        assert await asyncio.wait_for(att.read(), T) == image

        # A voice message.
        await fake.dispatch("MESSAGE_CREATE", fake.message_create_voice(OGG, duration_secs=1.7))
        voice = await next_item(bot.inbox, "on_message (voice)", from_user)
        assert voice.flags.voice and voice.attachments[0].is_voice_message()
        assert voice.attachments[0].duration == 1.7 and len(voice.attachments[0].waveform) <= 256
        assert await asyncio.wait_for(voice.attachments[0].read(), T) == OGG

        # Sending a voice message the way an adapter has to with discord.py 2.7 (raw route).
        support = fake.support_channel_id
        payload = {"flags": MessageFlags.IS_VOICE_MESSAGE, "attachments": [
            {"id": "0", "filename": "voice-message.ogg", "duration_secs": 1.0,
             "waveform": base64.b64encode(bytes(range(0, 200, 4))).decode()}]}
        file = discord.File(io.BytesIO(OGG), filename="voice-message.ogg")
        form = [{"name": "payload_json", "value": discord.utils._to_json(payload)},
                {"name": "files[0]", "value": file.fp, "filename": file.filename,
                 "content_type": "application/octet-stream"}]
        route = discord.http.Route("POST", "/channels/{channel_id}/messages", channel_id=support)
        data = await bot.http.request(route, files=[file], form=form)
        assert data["flags"] == 8192 and fake.attachment_bytes(data["attachments"][0]) == OGG

        # ... or with the upload-URL flow Discord's own clients use.
        slots = await bot.http.request(
            discord.http.Route("POST", "/channels/{channel_id}/attachments", channel_id=support),
            json={"files": [{"filename": "voice-message.ogg", "file_size": len(OGG), "id": "0"}]})
        slot = slots["attachments"][0]
        async with aiohttp.ClientSession() as http:
            async with http.put(slot["upload_url"], data=OGG, headers={"Content-Type": "audio/ogg"}) as r:
                assert r.status == 200
        payload["attachments"][0]["uploaded_filename"] = slot["upload_filename"]
        data = await bot.http.request(route, json=payload)
        assert fake.attachment_bytes(data["attachments"][0]) == OGG
        with pytest.raises(discord.HTTPException) as exc:
            await bot.http.request(route, json={"content": "x" * 2001})
        assert exc.value.status == 400 and exc.value.code == ErrorCode.INVALID_FORM_BODY


async def test_threads_from_messages_and_role_pings_as_discord_documents(fake):
    # https://discord.com/developers/docs/resources/channel#start-thread-from-message
    api, sid = fake.api_base, fake.support_channel_id
    role = fake.add_role("Support", mentionable=False)
    question = fake.message_create_guild("how do I reset my password?", channel_id=sid)
    async with running(fake) as bot:
        parent = bot.get_channel(int(sid))
        thread = await parent.get_partial_message(int(question["id"])).create_thread(name="reset")
        assert thread.id == int(question["id"]) and thread.parent_id == int(sid)     # the message's id
        event = await fake.wait_for_dispatch("THREAD_CREATE", timeout=T)
        assert event["newly_created"] is True and event["type"] == 11 and event["guild_id"] == fake.guild_id
        for _ in range(int(T / 0.02)):           # THREAD_CREATE fills discord.py's cache
            if bot.get_channel(thread.id) is not None:
                break
            await asyncio.sleep(0.02)
        cached = bot.get_channel(thread.id)
        assert isinstance(cached, discord.Thread) and cached.name == "reset"
        sent = await thread.send("Here is how.")
        assert fake.messages[str(sent.id)]["channel_id"] == question["id"]          # channel_id = thread id
        assert fake.channels[question["id"]]["message_count"] == 1
        assert fake.messages[question["id"]]["thread"]["id"] == question["id"]
        # a role that is not mentionable is not pinged by a bot without MENTION_EVERYONE
        ping = await thread.send(f"<@&{role}> help", allowed_mentions=discord.AllowedMentions(roles=True))
        assert fake.messages[str(ping.id)]["mention_roles"] == []
        for r in fake.guilds[fake.guild_id]["roles"]:
            if r["id"] == role:
                r["mentionable"] = True
        ping = await thread.send(f"<@&{role}> help", allowed_mentions=discord.AllowedMentions.none())
        assert fake.messages[str(ping.id)]["mention_roles"] == []                # not allowed
        ping = await thread.send(f"<@&{role}> help",
                                 allowed_mentions=discord.AllowedMentions(roles=[discord.Object(int(role))]))
        assert fake.messages[str(ping.id)]["mention_roles"] == [role]

    async with aiohttp.ClientSession() as http:
        async def post(path, body, status, code):
            async with http.post(f"{api}{path}", json=body, headers=AUTH) as r:
                got = await r.json()
                assert r.status == status and got["code"] == code, (path, r.status, got)
                return got

        other = fake.message_create_guild("another question", channel_id=sid)
        start = f"/channels/{sid}/messages/{other['id']}/threads"
        bad = await post(start, {"name": ""}, 400, ErrorCode.INVALID_FORM_BODY)
        assert "name" in bad["errors"]
        await post(start, {"name": "x" * 101}, 400, ErrorCode.INVALID_FORM_BODY)
        await post(start, {"name": "ok", "auto_archive_duration": 30}, 400, ErrorCode.INVALID_FORM_BODY)
        await post(f"/channels/{sid}/messages/{question['id']}/threads", {"name": "again"}, 400,
                   ErrorCode.THREAD_ALREADY_CREATED)
        await post(f"/channels/{sid}/messages/1/threads", {"name": "x"}, 404, ErrorCode.UNKNOWN_MESSAGE)
        in_thread = fake.message_create_guild("in the thread", channel_id=question["id"])
        await post(f"/channels/{question['id']}/messages/{in_thread['id']}/threads", {"name": "x"}, 400,
                   ErrorCode.INVALID_CHANNEL_TYPE)
        await post(f"/channels/{sid}/messages", {"content": "x", "allowed_mentions": {
            "parse": ["roles"], "roles": [role]}}, 400, ErrorCode.INVALID_FORM_BODY)
        bot_role = next(r for r in fake.guilds[fake.guild_id]["roles"] if r["id"] == fake.guilds[fake.guild_id]["bot_role_id"])
        everyone = next(r for r in fake.guilds[fake.guild_id]["roles"] if r["id"] == fake.guild_id)
        for r in (bot_role, everyone):          # a bot invited without Create Public Threads
            r["permissions"] = str(int(r["permissions"]) & ~(1 << 35))
        await post(start, {"name": "ok"}, 403, ErrorCode.MISSING_PERMISSIONS)
