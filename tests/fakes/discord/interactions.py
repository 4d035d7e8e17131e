"""Interactions on the Discord fake: INTERACTION_CREATE payloads (slash commands, buttons, modal
submits), the callback that must come once and within the deadline, modals as Discord checks
them, and the follow-up webhook that exists only once the interaction is acknowledged."""

from __future__ import annotations

import base64
import dataclasses
import json
import secrets
import time
from typing import Any, Dict, List, Optional, Union

from tests.fakes.discord.protocol import BOT_PERMISSIONS, ErrorCode, MessageFlags, _error, _form_error, _walk_components


@dataclasses.dataclass
class _Interaction:
    id: str
    token: str
    type: int
    payload: dict
    channel_id: str
    guild_id: Optional[str]
    user: dict
    created_at: float
    dispatched_at: Optional[float] = None
    response_type: Optional[int] = None
    original_message_id: Optional[str] = None
    deferred_pending: bool = False  # deferred (type 5) and no message content yet
    message_ids: List[str] = dataclasses.field(default_factory=list)
    ephemeral: bool = False
    modal: Optional[dict] = None  # the modal shown in answer (response type 9)


class Interactions:
    """Interaction payloads, callbacks and follow-ups of DiscordFake."""

    def _add_interaction_metadata(self, msg: dict, inter: _Interaction) -> None:
        data = inter.payload.get("data", {})
        meta: Dict[str, Any] = {
            "id": inter.id,
            "type": inter.type,
            "user": inter.user,
            "authorizing_integration_owners": inter.payload.get("authorizing_integration_owners", {}),
        }
        if inter.type == 2:
            meta["name"] = data.get("name")
            meta["command_type"] = data.get("type", 1)
            msg["interaction"] = {"id": inter.id, "type": inter.type, "name": data.get("name"), "user": inter.user}
            if inter.guild_id:
                member = dict(self.member(inter.user, inter.guild_id))
                member.pop("user", None)
                msg["interaction"]["member"] = member
        elif inter.type == 3 and inter.payload.get("message"):
            meta["interacted_message_id"] = inter.payload["message"]["id"]
        if inter.original_message_id and msg["id"] != inter.original_message_id:
            meta["original_response_message_id"] = inter.original_message_id
        msg["interaction_metadata"] = meta
        msg["type"] = 20 if inter.type == 2 else msg["type"]

    def _interaction_common(self, type_: int, *, user: Optional[dict], channel_id: Optional[str], dm: bool) -> dict:
        user = user or self.user
        if dm:
            channel = self.add_dm_channel(user)
        else:
            channel = self._channel_or_404(channel_id or self.channel_id)
        gid = channel.get("guild_id")
        iid = self._snowflake()
        token = "aW50ZXJhY3Rpb246" + base64.urlsafe_b64encode(
            f"{iid}:{secrets.token_hex(24)}".encode()).decode().rstrip("=")
        payload: Dict[str, Any] = {
            "app_permissions": str(BOT_PERMISSIONS),
            "application_id": self.application_id,
            "attachment_size_limit": self.upload_limit,
            "authorizing_integration_owners": {"0": gid or "0"},
            "channel": None,
            "channel_id": channel["id"],
            "context": 0 if gid else 1,
            "entitlement_sku_ids": [],
            "entitlements": [],
            "id": iid,
            "locale": "en-US",
            "token": token,
            "type": type_,
            "version": 1,
        }
        if gid:
            g = self.guilds[gid]["guild"]
            payload["guild"] = {"features": g["features"], "id": gid, "locale": g["preferred_locale"]}
            payload["guild_id"] = gid
            payload["guild_locale"] = g["preferred_locale"]
            member = dict(self.member(user, gid))
            member["permissions"] = str(self._member_permissions(gid, user["id"]))
            payload["member"] = member
            payload["channel"] = {k: v for k, v in channel.items() if k in (
                "id", "type", "guild_id", "name", "position", "permission_overwrites", "parent_id", "topic",
                "nsfw", "last_message_id", "rate_limit_per_user", "flags", "icon_emoji", "theme_color",
                "owner_id", "thread_metadata", "message_count", "member_count", "total_message_sent")}
            payload["channel"]["permissions"] = str(BOT_PERMISSIONS)
        else:
            payload["user"] = user
            payload["channel"] = {"flags": 0, "id": channel["id"], "last_message_id": channel["last_message_id"],
                                  "recipients": [user], "type": 1}
        self.interactions[token] = _Interaction(
            id=iid, token=token, type=type_, payload=payload, channel_id=channel["id"], guild_id=gid,
            user=user, created_at=time.monotonic())
        return payload

    def interaction_command(self, name: str, options: Union[None, Dict[str, Any], List[dict]] = None, *,
                            user: Optional[dict] = None, channel_id: Optional[str] = None, dm: bool = False,
                            guild_command: Optional[bool] = None, require_synced: bool = True) -> dict:
        """INTERACTION_CREATE for a slash command (type 2).

        The command must have been synced (PUT .../commands): Discord can only send
        interactions for registered commands, and ``data.id`` is the registered id.
        ``options`` is a list of raw option objects, or a dict ``{name: value}`` checked
        against the registered options (type-11 attachment options take the dict that
        :meth:`add_attachment` returned and fill ``data.resolved.attachments``).
        """
        payload = self._interaction_common(2, user=user, channel_id=channel_id, dm=dm)
        gid = payload.get("guild_id")
        command = self._find_command(name, gid, guild_command)
        if command is None and require_synced:
            del self.interactions[payload["token"]]
            raise ValueError(f"command {name!r} is not registered; sync the command tree first "
                             f"(registered: {[c['name'] for c in self._visible_commands(gid)]})")
        data: Dict[str, Any] = {"id": command["id"] if command else self._snowflake(), "name": name, "type": 1}
        if command and command.get("guild_id"):
            data["guild_id"] = command["guild_id"]
        resolved: Dict[str, Dict[str, Any]] = {}
        if isinstance(options, dict):
            defs = {o["name"]: o for o in (command or {}).get("options", [])}
            opts = []
            for key, value in options.items():
                if command is not None and key not in defs:
                    raise ValueError(f"command {name!r} has no option {key!r}")
                otype = defs.get(key, {}).get("type", 3)
                if otype == 11:
                    if not isinstance(value, dict) or "id" not in value:
                        raise ValueError("an attachment option takes the dict returned by add_attachment()")
                    resolved.setdefault("attachments", {})[value["id"]] = value
                    value = value["id"]
                elif otype == 6:
                    user_obj = value if isinstance(value, dict) else self.users[str(value)]
                    resolved.setdefault("users", {})[user_obj["id"]] = user_obj
                    if gid and user_obj["id"] in self.guilds[gid]["members"]:
                        m = {k: v for k, v in self.member(user_obj, gid).items() if k != "user"}
                        m["permissions"] = str(self._member_permissions(gid, user_obj["id"]))
                        resolved.setdefault("members", {})[user_obj["id"]] = m
                    value = user_obj["id"]
                opts.append({"name": key, "type": otype, "value": value})
            for key, definition in defs.items():
                if definition.get("required") and key not in options:
                    raise ValueError(f"required option {key!r} of {name!r} missing (Discord's client enforces it)")
            data["options"] = opts
        elif options:
            data["options"] = list(options)
        if resolved:
            data["resolved"] = resolved
        payload["data"] = data
        return payload

    def interaction_button(self, custom_id: str, message: dict, *, user: Optional[dict] = None,
                           component_type: int = 2) -> dict:
        """INTERACTION_CREATE for a click on a button (type 3) of ``message``."""
        mid = str(message["id"])
        stored = self.messages.get(mid)
        if stored is None:
            raise ValueError("message is not a message the fake knows")
        found = any(c.get("custom_id") == custom_id for c in _walk_components(stored.get("components", [])))
        if not found:
            raise ValueError(f"message {mid} has no component with custom_id {custom_id!r}")
        channel = self.channels[stored["channel_id"]]
        dm = channel["type"] == 1
        if dm and user is None:
            user = channel["recipients"][0]
        payload = self._interaction_common(3, user=user, channel_id=None if dm else channel["id"], dm=dm)
        payload["data"] = {"component_type": component_type, "custom_id": custom_id}
        payload["message"] = json.loads(json.dumps(stored))
        return payload

    def interaction_modal_submit(self, shown_for: dict, values: Dict[str, str]) -> dict:
        """INTERACTION_CREATE for submitting the modal that was the answer to ``shown_for`` (an
        interaction payload), filled in with ``values`` {custom_id: text} by the same person.

        Discord's client enforces the modal's own rules before anything is sent, so asking for
        what a person could not submit (an unknown field, a required field left empty, a text
        outside min_length..max_length) raises ValueError."""
        shown = self.interaction_state(shown_for)
        if shown.modal is None:
            raise ValueError("no modal was shown in answer to that interaction (response type 9)")
        modal = shown.modal
        inputs: Dict[str, dict] = {}
        for row in modal["components"]:
            for comp in ([row.get("component")] if row.get("type") == 18 else row.get("components") or []):
                if isinstance(comp, dict) and comp.get("type") == 4:
                    inputs[comp["custom_id"]] = comp
        unknown = set(values) - set(inputs)
        if unknown:
            raise ValueError(f"the modal has no text input {sorted(unknown)} (it has {sorted(inputs)})")
        filled: Dict[str, str] = {}
        for cid, comp in inputs.items():
            text = values.get(cid, comp.get("value") or "")
            if comp.get("required", True) and not text:
                raise ValueError(f"{cid!r} is required; Discord's client does not submit the modal without it")
            if text and not (comp.get("min_length") or 0) <= len(text) <= (comp.get("max_length") or 4000):
                raise ValueError(f"{cid!r} must be {comp.get('min_length') or 0}..{comp.get('max_length') or 4000} "
                                 "characters; Discord's client does not submit it otherwise")
            filled[cid] = text
        payload = self._interaction_common(5, user=shown.user, channel_id=None if not shown.guild_id else shown.channel_id,
                                           dm=not shown.guild_id)
        components = []
        for row in modal["components"]:
            if row.get("type") == 18:
                comp = row["component"]
                components.append({"type": 18, "id": row.get("id", 0), "component": {
                    "type": comp["type"], "id": comp.get("id", 0), "custom_id": comp["custom_id"],
                    "value": filled.get(comp["custom_id"], "")}})
            elif row.get("type") == 1:
                comp = row["components"][0]
                components.append({"type": 1, "id": row.get("id", 0), "components": [{
                    "type": 4, "id": comp.get("id", 0), "custom_id": comp["custom_id"],
                    "value": filled[comp["custom_id"]]}]})
        payload["data"] = {"custom_id": modal["custom_id"], "components": components}
        return payload

    def interaction_state(self, payload_or_token: Union[dict, str]) -> _Interaction:
        token = payload_or_token["token"] if isinstance(payload_or_token, dict) else payload_or_token
        return self.interactions[token]

    def _interaction_for_callback(self, interaction_id: str, token: str) -> _Interaction:
        inter = self.interactions.get(token)
        if inter is None or inter.id != interaction_id:
            raise _error(404, ErrorCode.UNKNOWN_INTERACTION, "Unknown interaction")
        return inter

    async def _h_callback(self, request, params, body, rec):
        inter = self._interaction_for_callback(params["interaction_id"], params["token"])
        if inter.response_type is not None:
            raise _error(400, ErrorCode.INTERACTION_ALREADY_ACKNOWLEDGED, "Interaction has already been acknowledged.")
        started = inter.dispatched_at if inter.dispatched_at is not None else inter.created_at
        if self.interaction_ack_deadline is not None and time.monotonic() - started > self.interaction_ack_deadline:
            # Discord invalidates the token when the first response misses the 3 s deadline.
            raise _error(404, ErrorCode.UNKNOWN_INTERACTION, "Unknown interaction")
        if not isinstance(body, dict) or not isinstance(body.get("type"), int):
            raise _form_error(["type"], "BASE_TYPE_REQUIRED", "This field is required")
        rtype = body["type"]
        data = body.get("data") or {}
        valid = {2: {4, 5, 9, 12}, 3: {4, 5, 6, 7, 9, 12}, 4: {8}, 5: {4, 5, 6, 7}}.get(inter.type, set())
        if rtype not in valid:
            raise _form_error(["type"], "INTERACTION_RESPONSE_TYPE_INVALID",
                              f"Interaction response type {rtype} is not valid for interaction type {inter.type}")
        resource: Dict[str, Any] = {"type": rtype}
        callback: Dict[str, Any] = {"id": inter.id, "type": inter.type}
        message: Optional[dict] = None
        if rtype == 4:
            fields = self._validate_message(data, rec.files, inter.channel_id, interaction=True)
            message = self._interaction_message(inter, fields)
            inter.original_message_id = message["id"]
            inter.ephemeral = bool(fields["flags"] & MessageFlags.EPHEMERAL)
            resource["message"] = message
        elif rtype == 5:
            flags = (data.get("flags") or 0) if isinstance(data, dict) else 0
            if flags & ~MessageFlags.EPHEMERAL:
                raise _form_error(["data", "flags"], "INTERACTION_DEFERRED_FLAGS_INVALID",
                                  "Only the EPHEMERAL flag can be set on a deferred response")
            fields = {"content": "", "flags": MessageFlags.LOADING | flags}
            message = self._interaction_message(inter, fields)
            inter.original_message_id = message["id"]
            inter.deferred_pending = True
            inter.ephemeral = bool(flags & MessageFlags.EPHEMERAL)
        elif rtype in (6, 7):
            target = self.messages.get(str(inter.payload.get("message", {}).get("id")))
            if target is None:
                raise _error(404, ErrorCode.UNKNOWN_MESSAGE, "Unknown Message")
            inter.original_message_id = target["id"]
            if rtype == 7:
                self._apply_edit(target, data, rec.files, interaction=True)
                await self._echo("MESSAGE_UPDATE", target)
                resource["message"] = target
                message = target
        elif rtype == 8:
            choices = data.get("choices")
            if not isinstance(choices, list) or len(choices) > 25:
                raise _form_error(["data", "choices"], "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
        elif rtype == 9:
            self._validate_modal(data)
            inter.modal = json.loads(json.dumps(data))
        inter.response_type = rtype
        if inter.original_message_id and rtype in (4, 5):
            callback["response_message_id"] = inter.original_message_id
            callback["response_message_loading"] = rtype == 5
            callback["response_message_ephemeral"] = inter.ephemeral
        if message is not None and rtype in (4, 5):
            await self._echo("MESSAGE_CREATE", message)
        if request.query.get("with_response", "").lower() in ("1", "true"):
            return 200, {"interaction": callback, "resource": resource}
        return 204, None

    @staticmethod
    def _validate_modal(data: Any) -> None:
        """A MODAL response's data as Discord checks it
        (https://discord.com/developers/docs/interactions/receiving-and-responding#interaction-response-object-modal
        and .../components/reference#text-input): a custom_id and title, one to five top-level
        components, each an action row holding one text input (the older layout), a label
        holding one, or a text display; text inputs with their lengths and styles in range."""
        if not isinstance(data, dict):
            raise _form_error(["data"], "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
        for key in ("custom_id", "title", "components"):
            if not data.get(key):
                raise _form_error(["data", key], "BASE_TYPE_REQUIRED", "This field is required")
        if not isinstance(data["custom_id"], str) or len(data["custom_id"]) > 100:
            raise _form_error(["data", "custom_id"], "BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length.")
        if not isinstance(data["title"], str) or len(data["title"]) > 45:
            raise _form_error(["data", "title"], "BASE_TYPE_MAX_LENGTH", "Must be 45 or fewer in length.")
        rows = data["components"]
        if not isinstance(rows, list) or not 1 <= len(rows) <= 5:
            raise _form_error(["data", "components"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 5 in length.")
        seen: set = set()
        for i, row in enumerate(rows):
            where: List[Union[str, int]] = ["data", "components", i]
            if not isinstance(row, dict):
                raise _form_error(where, "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
            if row.get("type") == 10:            # text display
                continue
            if row.get("type") == 1:
                inner = row.get("components")
                if not isinstance(inner, list) or len(inner) != 1:
                    raise _form_error(where + ["components"], "BASE_TYPE_BAD_LENGTH",
                                      "Must be between 1 and 1 in length.")
                text_input, labelled = inner[0], False
                where = where + ["components", 0]
            elif row.get("type") == 18:
                label = row.get("label")
                if not isinstance(label, str) or not 1 <= len(label) <= 45:
                    raise _form_error(where + ["label"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 45 in length.")
                text_input, labelled = row.get("component"), True
                where = where + ["component"]
            else:
                raise _form_error(where + ["type"], "UNION_TYPE_CHOICES",
                                  "Value of field \"type\" must be one of (1, 10, 18).")
            if not isinstance(text_input, dict) or text_input.get("type") != 4:
                if labelled and isinstance(text_input, dict) and text_input.get("type") in (3, 5, 6, 7, 8):
                    continue                     # a select menu in a label
                raise _form_error(where + ["type"], "UNION_TYPE_CHOICES", "Value of field \"type\" must be 4.")
            cid = text_input.get("custom_id")
            if not isinstance(cid, str) or not 1 <= len(cid) <= 100:
                raise _form_error(where + ["custom_id"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
            if cid in seen:
                raise _form_error(where + ["custom_id"], "COMPONENT_CUSTOM_ID_DUPLICATED",
                                  "Component custom id cannot be duplicated")
            seen.add(cid)
            if text_input.get("style") not in (1, 2):
                raise _form_error(where + ["style"], "BASE_TYPE_CHOICES", "Value must be one of (1, 2).")
            if not labelled:
                label = text_input.get("label")
                if not isinstance(label, str) or not 1 <= len(label) <= 45:
                    raise _form_error(where + ["label"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 45 in length.")
            low, high = text_input.get("min_length"), text_input.get("max_length")
            if low is not None and (not isinstance(low, int) or not 0 <= low <= 4000):
                raise _form_error(where + ["min_length"], "NUMBER_TYPE_MAX", "int value should be between 0 and 4000.")
            if high is not None and (not isinstance(high, int) or not 1 <= high <= 4000):
                raise _form_error(where + ["max_length"], "NUMBER_TYPE_MAX", "int value should be between 1 and 4000.")
            if low is not None and high is not None and low > high:
                raise _form_error(where + ["min_length"], "BASE_TYPE_BAD_LENGTH", "min_length must not exceed max_length.")
            value = text_input.get("value")
            if value is not None and (not isinstance(value, str) or len(value) > (high or 4000)):
                raise _form_error(where + ["value"], "BASE_TYPE_MAX_LENGTH", f"Must be {high or 4000} or fewer in length.")
            placeholder = text_input.get("placeholder")
            if placeholder is not None and (not isinstance(placeholder, str) or len(placeholder) > 100):
                raise _form_error(where + ["placeholder"], "BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length.")

    def _interaction_message(self, inter: _Interaction, fields: Dict[str, Any]) -> dict:
        msg = self._make_message(
            inter.channel_id, self.bot_user, fields.get("content", ""),
            attachments=fields.get("attachments"), embeds=fields.get("embeds"),
            components=fields.get("components"), flags=fields.get("flags", 0), webhook_id=self.application_id,
            interaction=inter, tts=fields.get("tts", False), poll=fields.get("poll"),
            allowed_mentions=fields.get("allowed_mentions"))
        inter.message_ids.append(msg["id"])
        return msg

    def _interaction_for_webhook(self, params: dict) -> _Interaction:
        inter = self.interactions.get(params["token"])
        if params["webhook_id"] != self.application_id or inter is None or inter.response_type is None:
            # An interaction's webhook only exists once the interaction is acknowledged.
            raise _error(404, ErrorCode.UNKNOWN_WEBHOOK, "Unknown Webhook")
        if time.monotonic() - inter.created_at > 15 * 60:
            raise _error(401, 50027, "Invalid Webhook Token")
        return inter

    async def _h_followup(self, request, params, body, rec):
        inter = self._interaction_for_webhook(params)
        body = body or {}
        for key in ("username", "avatar_url", "thread_name"):
            if body.get(key):
                raise _form_error([key], "INTERACTION_FOLLOWUP_FIELD_UNSUPPORTED",
                                  f"{key} is not supported for interaction follow-ups")
        if inter.deferred_pending and inter.original_message_id in self.messages:
            # Documented: the first follow-up after DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE edits
            # the loading message instead of creating one; its ephemeral state is kept.
            msg = self.messages[inter.original_message_id]
            self._apply_edit(msg, dict(body, flags=0), rec.files, interaction=True)
            inter.deferred_pending = False
            await self._echo("MESSAGE_UPDATE", msg)
            return 200, msg
        fields = self._validate_message(body, rec.files, inter.channel_id, interaction=True)
        msg = self._interaction_message(inter, fields)
        await self._echo("MESSAGE_CREATE", msg)
        return 200, msg  # "wait is always true" for interaction follow-ups

    async def _h_modify_webhook(self, request, params, body, rec):
        raise _error(404, ErrorCode.UNKNOWN_WEBHOOK, "Unknown Webhook")

    async def _h_webhook_message(self, request, params, body, rec):
        inter = self._interaction_for_webhook(params)
        mid = inter.original_message_id if params["message_id"] == "@original" else params["message_id"]
        allowed = set(inter.message_ids)
        if inter.original_message_id:
            allowed.add(inter.original_message_id)
        msg = self.messages.get(str(mid)) if mid in allowed else None
        if msg is None:
            raise _error(404, ErrorCode.UNKNOWN_MESSAGE, "Unknown Message")
        if request.method == "GET":
            return 200, msg
        if request.method == "DELETE":
            await self._delete_message(msg)
            return 204, None
        self._apply_edit(msg, body or {}, rec.files, interaction=True)
        if msg["id"] == inter.original_message_id:
            inter.deferred_pending = False
        await self._echo("MESSAGE_UPDATE", msg)
        return 200, msg
