"""A template's missing slots as a Discord modal (interaction response type 9).

The modal is the first response to the slash command (Discord allows no modal after a defer);
its submission is a new interaction, handed to `run` with the slots filled in, which
defers it and answers with follow-ups, like any slash command (the values reach the shared
command through `FormReply.form` in reply.py, see bots/skills.py). The modal's shape comes from
`bots.common.forms.discord_modal`.
"""
from __future__ import annotations

from typing import Awaitable, Callable

import discord

from bots.common.forms import discord_modal, discord_values
from engine.flows.templates import Template

MODAL_TIMEOUT_S = 15 * 60       # an interaction's token lives 15 minutes

RunTemplate = Callable[[discord.Interaction, Template, dict], Awaitable[None]]


class TemplateModal(discord.ui.Modal):
    def __init__(self, template: Template, given: dict, suffix: str, run: RunTemplate):
        spec = discord_modal(template, given, custom_id_suffix=f":{suffix}")
        super().__init__(title=spec["title"], custom_id=spec["custom_id"], timeout=MODAL_TIMEOUT_S)
        for row in spec["components"]:
            field = row["components"][0]
            self.add_item(discord.ui.TextInput(
                label=field["label"], custom_id=field["custom_id"], required=field["required"],
                style=discord.TextStyle.paragraph if field["style"] == 2 else discord.TextStyle.short,
                max_length=field["max_length"], default=field.get("value")))
        self.template, self.given, self.run = template, given, run

    def submitted(self) -> dict:
        typed = {item.custom_id: item.value for item in self.children if isinstance(item, discord.ui.TextInput)}
        return {**self.given, **discord_values(self.template, typed)}

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await self.run(interaction, self.template, self.submitted())
