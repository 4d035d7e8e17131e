"""Messages on the Discord fake: the message object and how Discord checks a body (content,
embeds, components, allowed mentions, replies, voice messages, edits), the MESSAGE_CREATE payloads
of what people post, the channel message routes, and the echo of the bot's own messages."""

from __future__ import annotations

import base64
import json
import re
import time
from typing import Any, Callable, Dict, List, Optional, Union

from tests.fakes.discord.interactions import _Interaction
from tests.fakes.discord.protocol import (
    _P_ADMINISTRATOR,
    _P_CREATE_PUBLIC_THREADS,
    _P_MENTION_EVERYONE,
    _P_SEND_IN_THREADS,
    ErrorCode,
    Intents,
    MessageFlags,
    RecordedFile,
    _error,
    _form_error,
    _iso,
    _snowflake_ms,
    _walk_components,
)

MAX_CONTENT = 2000


class Messages:
    """Messages, their checks, builders and routes (mixed into DiscordFake)."""

    def _make_message(self, channel_id: str, author: dict, content: str = "", *, attachments: Optional[list] = None,
                      embeds: Optional[list] = None, components: Optional[list] = None, flags: int = 0,
                      message_reference: Optional[dict] = None, type_: Optional[int] = None,
                      nonce: Optional[Union[str, int]] = None, tts: bool = False, webhook_id: Optional[str] = None,
                      interaction: Optional[_Interaction] = None, store: bool = True,
                      sticker_items: Optional[list] = None, poll: Optional[dict] = None,
                      allowed_mentions: Optional[dict] = None) -> dict:
        channel = self._channel_or_404(channel_id)
        mid = self._snowflake()
        mentions = self._parse_mentions(content, channel)
        msg: Dict[str, Any] = {
            "type": 0,
            "channel_id": str(channel_id),
            "content": content,
            "attachments": attachments or [],
            "embeds": embeds or [],
            "timestamp": _iso(_snowflake_ms(mid)),
            "edited_timestamp": None,
            "flags": flags,
            "components": components or [],
            "id": mid,
            "author": author,
            "mentions": mentions,
            "mention_roles": self._pinged_roles(content, channel, author, allowed_mentions),
            "mention_everyone": "@everyone" in content or "@here" in content,
            "pinned": False,
            "tts": tts,
        }
        if nonce is not None:
            msg["nonce"] = nonce
        if sticker_items:
            msg["sticker_items"] = sticker_items
        if poll is not None:
            msg["poll"] = poll
        if message_reference is not None:
            ref_id = str(message_reference.get("message_id"))
            ref = {"type": message_reference.get("type", 0), "channel_id": str(channel_id), "message_id": ref_id}
            if channel.get("guild_id"):
                ref["guild_id"] = channel["guild_id"]
            msg["message_reference"] = ref
            referenced = self.messages.get(ref_id)
            if referenced is not None:
                # A copy as of now, one level deep (Discord does not nest referenced_message).
                referenced = json.loads(json.dumps(referenced))
                referenced.pop("referenced_message", None)
            msg["referenced_message"] = referenced
            msg["type"] = 19
        if webhook_id is not None:
            msg["webhook_id"] = webhook_id
            msg["application_id"] = self.application_id
        if interaction is not None:
            self._add_interaction_metadata(msg, interaction)
        if type_ is not None:
            msg["type"] = type_
        if store:
            self.messages[mid] = msg
            if not flags & MessageFlags.EPHEMERAL:
                channel["last_message_id"] = mid
                if self.is_thread(channel["id"]):
                    channel["message_count"] += 1
                    channel["total_message_sent"] += 1
        return msg

    def _parse_mentions(self, content: str, channel: dict) -> List[dict]:
        found: List[dict] = []
        for uid in re.findall(r"<@!?(\d+)>", content or ""):
            user = self.users.get(uid)
            if user is not None and user not in found:
                found.append(user)
        return found

    def _pinged_roles(self, content: str, channel: dict, author: dict, allowed: Optional[dict]) -> List[str]:
        """The role ids of ``<@&id>`` mentions that ping. Without ``allowed_mentions`` every
        mention is parsed; with it, only the ones it allows. A role that is not mentionable pings
        only when the author has MENTION_EVERYONE (or is an administrator).
        Discord does not say whether ``mention_roles`` lists a role that did not ping; the fake
        lists only roles that pinged, which is what a test of a ping has to see."""
        gid = channel.get("guild_id")
        if not gid or gid not in self.guilds:
            return []
        roles = {r["id"]: r for r in self.guilds[gid]["roles"]}
        if allowed is None:
            allow: Callable[[str], bool] = lambda rid: True
        else:
            listed = {str(r) for r in allowed.get("roles") or []}
            parse_roles = "roles" in (allowed.get("parse") or [])
            allow = lambda rid: parse_roles or rid in listed
        member = self.guilds[gid]["members"].get(author["id"])
        perms = self._member_permissions(gid, author["id"]) if member is not None else 0
        strong = bool(perms & (_P_MENTION_EVERYONE | _P_ADMINISTRATOR))
        out: List[str] = []
        for rid in re.findall(r"<@&(\d+)>", content or ""):
            role = roles.get(rid)
            if role is not None and rid not in out and allow(rid) and (role["mentionable"] or strong):
                out.append(rid)
        return out

    @staticmethod
    def _validate_allowed_mentions(allowed: Any) -> Optional[dict]:
        # https://discord.com/developers/docs/resources/message#allowed-mentions-object
        if allowed is None:
            return None
        if not isinstance(allowed, dict):
            raise _form_error(["allowed_mentions"], "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
        parse = allowed.get("parse") or []
        if not isinstance(parse, list) or any(p not in ("roles", "users", "everyone") for p in parse):
            raise _form_error(["allowed_mentions", "parse"], "BASE_TYPE_CHOICES",
                              "Value must be one of ('roles', 'users', 'everyone').")
        for key in ("roles", "users"):
            ids = allowed.get(key)
            if ids is None:
                continue
            if not isinstance(ids, list) or len(ids) > 100:
                raise _form_error(["allowed_mentions", key], "BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length.")
            if ids and key in parse:
                # Documented: parse and the matching list are mutually exclusive.
                raise _form_error(["allowed_mentions", key], "SET_TYPE_ALREADY_CONTAINS_VALUE",
                                  f"parse:[\"{key}\"] and {key}: [ids...] are mutually exclusive.")
        return allowed

    def _gateway_message(self, msg: dict) -> dict:
        """A stored (REST-shaped) message as MESSAGE_CREATE/UPDATE carries it."""
        data = json.loads(json.dumps(msg))
        channel = self.channels.get(msg["channel_id"], {})
        gid = channel.get("guild_id")
        if gid:
            data["guild_id"] = gid
            members = self.guilds[gid]["members"]
            if "webhook_id" not in msg or msg.get("interaction_metadata"):
                member = members.get(msg["author"]["id"])
                if member is not None:
                    data["member"] = {k: v for k, v in member.items() if k != "user"}
            for mention in data["mentions"]:
                member = members.get(mention["id"])
                if member is not None:
                    mention["member"] = {k: v for k, v in member.items() if k != "user"}
        data["channel_type"] = channel.get("type", 0)
        return data

    def _content_visible(self, msg: dict, intents: int) -> bool:
        # https://discord.com/developers/docs/events/gateway#message-content-intent
        if intents & Intents.MESSAGE_CONTENT:
            return True
        if msg["author"]["id"] == self.bot_user_id:
            return True
        if not self.channels.get(msg["channel_id"], {}).get("guild_id"):
            return True
        return any(m["id"] == self.bot_user_id for m in msg.get("mentions", []))

    def _blank_content(self, msg: dict, intents: int) -> dict:
        if self._content_visible(msg, intents):
            out = msg
        else:
            out = dict(msg, content="", embeds=[], attachments=[], components=[])
            out.pop("poll", None)
        if isinstance(out.get("referenced_message"), dict):
            out = dict(out, referenced_message=self._blank_content(out["referenced_message"], intents))
        return out

    def message_create_mention(self, text: str = "question", *, author: Optional[dict] = None,
                               channel_id: Optional[str] = None, attachments: Optional[list] = None) -> dict:
        """MESSAGE_CREATE for a guild message "<@BOT> text" (mentions array included)."""
        content = f"<@{self.bot_user_id}> {text}".rstrip()
        return self._user_message(channel_id or self.channel_id, author or self.user, content, attachments=attachments)

    def message_create_guild(self, content: str, *, author: Optional[dict] = None,
                             channel_id: Optional[str] = None, attachments: Optional[list] = None) -> dict:
        """MESSAGE_CREATE for a plain guild message (no mention)."""
        return self._user_message(channel_id or self.channel_id, author or self.user, content, attachments=attachments)

    def message_create_dm(self, content: str = "hello", *, author: Optional[dict] = None,
                          attachments: Optional[list] = None) -> dict:
        """MESSAGE_CREATE for a DM to the bot: no guild_id, no member, channel_type 1."""
        author = author or self.user
        channel = self.add_dm_channel(author)
        return self._user_message(channel["id"], author, content, attachments=attachments)

    def message_create_reply(self, content: str, referenced_message: dict, *, author: Optional[dict] = None,
                             mention_author: bool = True) -> dict:
        """MESSAGE_CREATE for a reply (type 19, message_reference + referenced_message)."""
        ref_id = str(referenced_message["id"])
        if ref_id not in self.messages:
            raise ValueError("referenced_message is not a message the fake knows")
        channel_id = self.messages[ref_id]["channel_id"]
        msg = self._make_message(channel_id, author or self.user, content, message_reference={"message_id": ref_id})
        ref_author = self.messages[ref_id]["author"]
        if mention_author and all(m["id"] != ref_author["id"] for m in msg["mentions"]):
            msg["mentions"].append(ref_author)  # Discord lists the replied-to author when pinged
        return self._gateway_message(msg)

    def message_create_voice(self, audio: bytes, *, duration_secs: float = 2.5, waveform: Optional[bytes] = None,
                             author: Optional[dict] = None, channel_id: Optional[str] = None, dm: bool = False,
                             filename: str = "voice-message.ogg") -> dict:
        """MESSAGE_CREATE for a voice message: flags 8192, one audio/ogg attachment with
        ``duration_secs`` and a base64 ``waveform`` (at most 256 bytes)."""
        if waveform is None:
            waveform = bytes(min(255, (i * 37) % 256) for i in range(min(256, max(1, int(duration_secs * 10)))))
        if len(waveform) > 256:
            raise ValueError("a voice message waveform has at most 256 samples")
        author = author or self.user
        cid = self.add_dm_channel(author)["id"] if dm else (channel_id or self.channel_id)
        att = self.add_attachment(audio, filename, "audio/ogg", channel_id=cid, duration_secs=duration_secs,
                                  waveform=base64.b64encode(waveform).decode())
        return self._user_message(cid, author, "", attachments=[att], flags=MessageFlags.IS_VOICE_MESSAGE)

    def message_create_image(self, image: bytes, *, filename: str = "photo.png", content_type: Optional[str] = None,
                             content: str = "", mention: bool = True, author: Optional[dict] = None,
                             channel_id: Optional[str] = None, dm: bool = False, **extra: Any) -> dict:
        """MESSAGE_CREATE with one image attachment (width/height read from the image)."""
        author = author or self.user
        cid = self.add_dm_channel(author)["id"] if dm else (channel_id or self.channel_id)
        att = self.add_attachment(image, filename, content_type, channel_id=cid, **extra)
        if mention and not dm:
            content = f"<@{self.bot_user_id}> {content}".rstrip()
        return self._user_message(cid, author, content, attachments=[att])

    def _user_message(self, channel_id: str, author: dict, content: str, *, attachments: Optional[list] = None,
                      flags: int = 0) -> dict:
        msg = self._make_message(channel_id, author, content, attachments=attachments, flags=flags,
                                 nonce=str(int(self._snowflake()) + 1))
        for att in msg["attachments"]:
            stored = self.attachments.get(att["id"])
            if stored is not None and stored.channel_id != channel_id:
                raise ValueError("attachment was added for another channel; pass channel_id to add_attachment")
        return self._gateway_message(msg)

    def channel_messages(self, channel_id: Optional[str] = None) -> List[dict]:
        """Stored messages of a channel, oldest first (ephemeral ones excluded)."""
        cid = str(channel_id or self.channel_id)
        return [m for m in self.messages.values()
                if m["channel_id"] == cid and not m["flags"] & MessageFlags.EPHEMERAL]

    def sent_by_bot(self, channel_id: Optional[str] = None) -> List[dict]:
        return [m for m in self.messages.values() if m["author"]["id"] == self.bot_user_id
                and (channel_id is None or m["channel_id"] == str(channel_id))]

    def _visible_message(self, msg: dict) -> dict:
        # REST follows the application's approval for MESSAGE_CONTENT, not the gateway intents.
        intents = Intents.MESSAGE_CONTENT if self.allowed_privileged_intents & Intents.MESSAGE_CONTENT else 0
        return self._blank_content(msg, intents)

    async def _h_history(self, request, params, body, rec):
        channel = self._channel_or_404(params["channel_id"])
        q = request.query
        try:
            limit = int(q.get("limit", "50"))
        except ValueError:
            raise _form_error(["limit"], "NUMBER_TYPE_COERCE", "Value is not int.")
        if not 1 <= limit <= 100:
            raise _form_error(["limit"], "NUMBER_TYPE_MAX" if limit > 100 else "NUMBER_TYPE_MIN",
                              "int value should be between 1 and 100.")
        msgs = self.channel_messages(channel["id"])
        ids = [int(m["id"]) for m in msgs]
        if "before" in q:
            msgs = [m for m, i in zip(msgs, ids) if i < int(q["before"])][-limit:]
        elif "after" in q:
            msgs = [m for m, i in zip(msgs, ids) if i > int(q["after"])][:limit]
        elif "around" in q:
            center = int(q["around"])
            older = [m for m, i in zip(msgs, ids) if i < center][-(limit // 2):] if limit > 1 else []
            rest = [m for m, i in zip(msgs, ids) if i >= center][:limit - len(older)]
            msgs = older + rest
        else:
            msgs = msgs[-limit:]
        return 200, [self._visible_message(m) for m in reversed(msgs)]

    def _message_in_channel(self, channel_id: str, message_id: str) -> dict:
        self._channel_or_404(channel_id)
        msg = self.messages.get(message_id)
        if msg is None or msg["channel_id"] != channel_id or msg["flags"] & MessageFlags.EPHEMERAL:
            raise _error(404, ErrorCode.UNKNOWN_MESSAGE, "Unknown Message")
        return msg

    async def _h_get_message(self, request, params, body, rec):
        return 200, self._visible_message(self._message_in_channel(params["channel_id"], params["message_id"]))

    async def _h_create_message(self, request, params, body, rec):
        channel = self._channel_or_404(params["channel_id"])
        body = body or {}
        if self.is_thread(channel["id"]) and not self._member_permissions(channel["guild_id"], self.bot_user_id) \
                & _P_SEND_IN_THREADS:
            raise _error(403, ErrorCode.MISSING_PERMISSIONS, "Missing Permissions")
        fields = self._validate_message(body, rec.files, channel["id"])
        msg = self._make_message(channel["id"], self.bot_user, **fields)
        await self._echo("MESSAGE_CREATE", msg)
        return 200, msg

    async def _h_start_thread(self, request, params, body, rec):
        parent = self._channel_or_404(params["channel_id"])
        message = self._message_in_channel(parent["id"], params["message_id"])
        if parent.get("guild_id") and not self._member_permissions(parent["guild_id"], self.bot_user_id) \
                & _P_CREATE_PUBLIC_THREADS:
            raise _error(403, ErrorCode.MISSING_PERMISSIONS, "Missing Permissions")
        thread = self._new_thread(parent, message, self.bot_user, body)
        await self._thread_created(thread)
        return 200, thread

    async def _h_edit_message(self, request, params, body, rec):
        msg = self._message_in_channel(params["channel_id"], params["message_id"])
        if msg["author"]["id"] != self.bot_user_id:
            raise _error(403, ErrorCode.CANNOT_EDIT_OTHERS_MESSAGE, "Cannot edit a message authored by another user")
        self._apply_edit(msg, body or {}, rec.files)
        await self._echo("MESSAGE_UPDATE", msg)
        return 200, msg

    async def _h_delete_message(self, request, params, body, rec):
        msg = self._message_in_channel(params["channel_id"], params["message_id"])
        channel = self.channels[msg["channel_id"]]
        if msg["author"]["id"] != self.bot_user_id and channel["type"] == 1:
            raise _error(403, ErrorCode.CANNOT_EXECUTE_ON_DM, "Cannot execute action on a DM channel")
        await self._delete_message(msg)
        return 204, None

    async def _delete_message(self, msg: dict) -> None:
        del self.messages[msg["id"]]
        channel = self.channels[msg["channel_id"]]
        data = {"id": msg["id"], "channel_id": msg["channel_id"]}
        if channel.get("guild_id"):
            data["guild_id"] = channel["guild_id"]
        if not msg["flags"] & MessageFlags.EPHEMERAL:
            await self._echo_raw("MESSAGE_DELETE", data)

    async def _h_reaction(self, request, params, body, rec):
        self._message_in_channel(params["channel_id"], params["message_id"])
        self.reactions.append((request.method, params["channel_id"], params["message_id"], params["emoji"]))
        return 204, None

    async def _h_typing(self, request, params, body, rec):
        self._channel_or_404(params["channel_id"])
        self.typing.append(params["channel_id"])
        return 204, None

    def _validate_message(self, body: dict, files: List[RecordedFile], channel_id: str, *,
                          existing: Optional[dict] = None, interaction: bool = False) -> Dict[str, Any]:
        """Validate a create-message body as Discord does; return ``_make_message`` fields."""
        if not isinstance(body, dict):
            raise _form_error([], "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
        content = body.get("content")
        if content is not None and not isinstance(content, str):
            raise _form_error(["content"], "BASE_TYPE_STRING", "Must be a string.")
        content = content or ""
        if len(content) > MAX_CONTENT:
            raise _form_error(["content"], "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_CONTENT} or fewer in length.")
        embeds = body.get("embeds") or []
        self._validate_embeds(embeds)
        components = body.get("components") or []
        if not isinstance(components, list) or len(components) > 40:
            raise _form_error(["components"], "BASE_TYPE_MAX_LENGTH", "Must be 40 or fewer in length.")
        for i, comp in enumerate(components):
            if not isinstance(comp, dict) or "type" not in comp:
                raise _form_error(["components", i, "type"], "BASE_TYPE_REQUIRED", "This field is required")
        for comp in _walk_components(components):
            if comp.get("custom_id") is not None and len(str(comp["custom_id"])) > 100:
                raise _form_error(["components"], "BASE_TYPE_MAX_LENGTH", "custom_id: Must be 100 or fewer in length.")
        flags = body.get("flags") or 0
        if not isinstance(flags, int):
            raise _form_error(["flags"], "NUMBER_TYPE_COERCE", "Value is not int.")
        allowed = MessageFlags.SUPPRESS_EMBEDS | MessageFlags.SUPPRESS_NOTIFICATIONS | \
            MessageFlags.IS_VOICE_MESSAGE | MessageFlags.IS_COMPONENTS_V2
        if interaction:
            allowed |= MessageFlags.EPHEMERAL
        flags &= allowed  # Discord ignores flags a message cannot be created with
        attachments = self._resolve_attachments(body, files, channel_id, existing=existing,
                                                ephemeral=bool(flags & MessageFlags.EPHEMERAL))
        stickers = body.get("sticker_ids") or []
        poll = body.get("poll")
        if flags & MessageFlags.IS_VOICE_MESSAGE:
            self._validate_voice(content, embeds, stickers, poll, components, attachments)
        if not content.strip() and not embeds and not attachments and not stickers and not components and not poll:
            raise _error(400, ErrorCode.EMPTY_MESSAGE, "Cannot send an empty message")
        reference = body.get("message_reference")
        if reference is not None:
            ref_id = str(reference.get("message_id"))
            target = self.messages.get(ref_id)
            ok = target is not None and not target["flags"] & MessageFlags.EPHEMERAL and (
                target["channel_id"] == channel_id
                or self.channels.get(target["channel_id"], {}).get("guild_id") ==
                self.channels.get(channel_id, {}).get("guild_id") is not None)
            if not ok:
                if reference.get("fail_if_not_exists", True):
                    raise _form_error(["message_reference"], "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message")
                reference = None
        return {
            "content": content,
            "embeds": [dict(e, type=e.get("type", "rich")) for e in embeds],
            "components": components,
            "flags": flags,
            "attachments": attachments,
            "message_reference": reference,
            "nonce": body.get("nonce"),
            "tts": bool(body.get("tts")),
            "poll": poll,
            "allowed_mentions": self._validate_allowed_mentions(body.get("allowed_mentions")),
        }

    @staticmethod
    def _validate_embeds(embeds: Any) -> None:
        if not isinstance(embeds, list):
            raise _form_error(["embeds"], "LIST_TYPE_CONVERT", "Only iterables may be used in a ListType")
        if len(embeds) > 10:
            raise _form_error(["embeds"], "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
        total = 0
        limits = {"title": 256, "description": 4096}
        for i, e in enumerate(embeds):
            if not isinstance(e, dict):
                raise _form_error(["embeds", i], "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
            for key, limit in limits.items():
                value = e.get(key) or ""
                total += len(value)
                if len(value) > limit:
                    raise _form_error(["embeds", i, key], "BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.")
            fields = e.get("fields") or []
            if len(fields) > 25:
                raise _form_error(["embeds", i, "fields"], "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
            for f in fields:
                total += len(f.get("name") or "") + len(f.get("value") or "")
            total += len((e.get("footer") or {}).get("text") or "") + len((e.get("author") or {}).get("name") or "")
        if total > 6000:
            raise _form_error(["embeds"], "MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size of 6000")

    @staticmethod
    def _validate_voice(content: str, embeds: list, stickers: list, poll: Any, components: list,
                        attachments: List[dict]) -> None:
        # https://discord.com/developers/docs/resources/message#voice-messages
        if content or embeds or stickers or poll or components:
            raise _error(400, ErrorCode.VOICE_MESSAGE_ADDITIONAL_CONTENT,
                         "Voice messages do not support additional content.")
        if len(attachments) != 1 or not attachments[0].get("content_type", "").startswith("audio/"):
            raise _error(400, ErrorCode.VOICE_MESSAGE_SINGLE_AUDIO_ATTACHMENT,
                         "Voice messages must have a single audio attachment.")
        att = attachments[0]
        if att.get("duration_secs") is None or att.get("waveform") is None:
            raise _error(400, ErrorCode.VOICE_MESSAGE_METADATA, "Voice messages must have supporting metadata.")
        if not isinstance(att["duration_secs"], (int, float)) or att["duration_secs"] <= 0:
            raise _form_error(["attachments", 0, "duration_secs"], "NUMBER_TYPE_COERCE", "Value is not a number.")
        try:
            wave = base64.b64decode(att["waveform"], validate=True)
        except (ValueError, TypeError):
            raise _form_error(["attachments", 0, "waveform"], "BASE_TYPE_BAD_BASE64", "Invalid base64.")
        if not wave or len(wave) > 256:
            # Discord's clients never send more than 256 samples; the fake refuses it.
            raise _form_error(["attachments", 0, "waveform"], "BASE_TYPE_MAX_LENGTH",
                              "Waveform must be 1 to 256 samples.")

    def _apply_edit(self, msg: dict, body: dict, files: List[RecordedFile], *, interaction: bool = False) -> None:
        if msg["flags"] & MessageFlags.IS_VOICE_MESSAGE:
            raise _error(400, ErrorCode.VOICE_MESSAGE_CANNOT_BE_EDITED, "Voice messages cannot be edited.")
        if not isinstance(body, dict):
            raise _form_error([], "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
        merged = {
            "content": msg["content"],
            "embeds": msg["embeds"],
            "components": msg["components"],
            "flags": msg["flags"] & ~(MessageFlags.LOADING | MessageFlags.EPHEMERAL),
            "sticker_ids": [s["id"] for s in msg.get("sticker_items", [])],
        }
        for key in ("content", "embeds", "components", "flags", "attachments", "poll"):
            if key in body:
                merged[key] = body[key]
        if "flags" in body and isinstance(body["flags"], int):
            # Only SUPPRESS_EMBEDS can be toggled on an existing message (voice flag can't be added).
            keep = msg["flags"] & ~MessageFlags.SUPPRESS_EMBEDS & ~MessageFlags.LOADING & ~MessageFlags.EPHEMERAL
            merged["flags"] = keep | (body["flags"] & MessageFlags.SUPPRESS_EMBEDS)
            if body["flags"] & MessageFlags.IS_VOICE_MESSAGE:
                raise _error(400, ErrorCode.VOICE_MESSAGE_CANNOT_BE_EDITED, "Voice messages cannot be edited.")
        fields = self._validate_message(merged, files, msg["channel_id"], existing=msg, interaction=interaction)
        keep_flags = msg["flags"] & MessageFlags.EPHEMERAL
        msg.update({
            "content": fields["content"],
            "embeds": fields["embeds"],
            "components": fields["components"],
            "attachments": fields["attachments"],
            "flags": fields["flags"] | keep_flags,
            "edited_timestamp": _iso(int(time.time() * 1000)),
        })
        msg["mentions"] = self._parse_mentions(msg["content"], self.channels[msg["channel_id"]])

    async def _echo(self, event: str, msg: dict) -> None:
        if msg["flags"] & MessageFlags.EPHEMERAL:
            return
        await self._echo_raw(event, self._gateway_message(msg))

    async def _echo_raw(self, event: str, data: dict) -> None:
        """The gateway event Discord sends about the bot's own REST action."""
        if not self.echo_own_messages or self._session is None:
            return
        await self.dispatch(event, data)
