"""Application commands on the Discord fake: registering them (PUT/POST, global or per guild) with
Discord's checks of names, descriptions and options, and finding the one an interaction names."""

from __future__ import annotations

import re
from typing import Any, List, Optional, Union

from tests.fakes.discord.protocol import ErrorCode, _error, _form_error


class Commands:
    """Application commands of DiscordFake."""

    def _visible_commands(self, guild_id: Optional[str]) -> List[dict]:
        return list(self.global_commands) + (list(self.guild_commands.get(guild_id, [])) if guild_id else [])

    def _find_command(self, name: str, guild_id: Optional[str], guild_command: Optional[bool]) -> Optional[dict]:
        pools: List[List[dict]] = []
        if guild_command is not False and guild_id:
            pools.append(self.guild_commands.get(guild_id, []))
        if guild_command is not True:
            pools.append(self.global_commands)
        for pool in pools:
            for cmd in pool:
                if cmd["name"] == name and cmd.get("type", 1) == 1:
                    if guild_id is None and (1 not in (cmd.get("contexts") or [0, 1, 2])
                                             or cmd.get("dm_permission") is False):
                        continue  # not usable in a DM with the bot
                    return cmd
        return None

    def _check_app(self, params: dict) -> Optional[str]:
        if params["application_id"] != self.application_id:
            raise _error(403, ErrorCode.MISSING_ACCESS, "Missing Access")
        gid = params.get("guild_id")
        if gid is not None and gid not in self.guilds:
            raise _error(403, ErrorCode.MISSING_ACCESS, "Missing Access")
        return gid

    async def _h_get_commands(self, request, params, body, rec):
        gid = self._check_app(params)
        return 200, (self.guild_commands.get(gid, []) if gid else self.global_commands)

    async def _h_put_commands(self, request, params, body, rec):
        gid = self._check_app(params)
        if not isinstance(body, list):
            raise _form_error([], "LIST_TYPE_CONVERT", "Only iterables may be used in a ListType")
        if len(body) > 100:
            raise _form_error([], "BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length.")
        current = self.guild_commands.get(gid, []) if gid else self.global_commands
        old = {(c["name"], c.get("type", 1)): c for c in current}
        result, seen = [], set()
        for i, cmd in enumerate(body):
            self._validate_command(cmd, [i])
            key = (cmd["name"], cmd.get("type", 1))
            if key in seen:
                raise _form_error([i, "name"], "APPLICATION_COMMANDS_DUPLICATE_NAME",
                                  "Application command names must be unique")
            seen.add(key)
            result.append(self._command_object(cmd, gid, old.get(key)))
        if gid:
            self.guild_commands[gid] = result
        else:
            self.global_commands = result
        return 200, result

    async def _h_post_command(self, request, params, body, rec):
        gid = self._check_app(params)
        self._validate_command(body, [])
        pool = self.guild_commands.setdefault(gid, []) if gid else self.global_commands
        existing = next((c for c in pool if c["name"] == body["name"] and c["type"] == body.get("type", 1)), None)
        cmd = self._command_object(body, gid, existing)
        if existing is not None:
            pool[pool.index(existing)] = cmd
            return 200, cmd
        pool.append(cmd)
        return 201, cmd

    def _validate_command(self, cmd: Any, path: List[Union[str, int]]) -> None:
        # https://discord.com/developers/docs/interactions/application-commands#application-command-object
        if not isinstance(cmd, dict):
            raise _form_error(path, "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
        ctype = cmd.get("type", 1)
        name = cmd.get("name")
        if not isinstance(name, str) or not 1 <= len(name) <= 32:
            raise _form_error(path + ["name"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 32 in length.")
        if ctype == 1:
            if not re.fullmatch(r"[-_'\w]{1,32}", name) or name != name.lower():
                raise _form_error(path + ["name"], "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid")
            desc = cmd.get("description")
            if not isinstance(desc, str) or not 1 <= len(desc) <= 100:
                raise _form_error(path + ["description"], "BASE_TYPE_BAD_LENGTH",
                                  "Must be between 1 and 100 in length.")
        elif cmd.get("description"):
            raise _form_error(path + ["description"], "APPLICATION_COMMAND_CONTEXT_MENU_DESCRIPTION",
                              "Context menu commands cannot have description")
        self._validate_options(cmd.get("options") or [], path + ["options"])

    def _validate_options(self, options: Any, path: List[Union[str, int]]) -> None:
        if not isinstance(options, list) or len(options) > 25:
            raise _form_error(path, "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
        seen_optional = False
        names = set()
        for i, opt in enumerate(options):
            if not isinstance(opt, dict) or not isinstance(opt.get("type"), int):
                raise _form_error(path + [i, "type"], "BASE_TYPE_REQUIRED", "This field is required")
            name, desc = opt.get("name"), opt.get("description")
            if not isinstance(name, str) or not re.fullmatch(r"[-_'\w]{1,32}", name) or name != name.lower():
                raise _form_error(path + [i, "name"], "APPLICATION_COMMAND_INVALID_NAME", "Option name is invalid")
            if name in names:
                raise _form_error(path + [i, "name"], "APPLICATION_COMMAND_OPTIONS_NAME_ALREADY_EXISTS",
                                  "Option names must be unique")
            names.add(name)
            if not isinstance(desc, str) or not 1 <= len(desc) <= 100:
                raise _form_error(path + [i, "description"], "BASE_TYPE_BAD_LENGTH",
                                  "Must be between 1 and 100 in length.")
            if opt["type"] in (1, 2):
                self._validate_options(opt.get("options") or [], path + [i, "options"])
            elif opt.get("required"):
                if seen_optional:
                    raise _form_error(path, "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                                      "Required options must be placed before non-required options")
            else:
                seen_optional = True

    def _command_object(self, cmd: dict, gid: Optional[str], old: Optional[dict]) -> dict:
        out = {
            "id": old["id"] if old else self._snowflake(),
            "application_id": self.application_id,
            "version": self._snowflake(),
            "default_member_permissions": cmd.get("default_member_permissions"),
            "type": cmd.get("type", 1),
            "name": cmd["name"],
            "name_localizations": cmd.get("name_localizations"),
            "description": cmd.get("description", ""),
            "description_localizations": cmd.get("description_localizations"),
            "dm_permission": cmd.get("dm_permission", True),
            "nsfw": cmd.get("nsfw", False),
        }
        if cmd.get("options"):
            out["options"] = cmd["options"]
        if gid:
            out["guild_id"] = gid
        else:
            out["contexts"] = cmd.get("contexts")
            out["integration_types"] = cmd.get("integration_types") or [0]
        return out
