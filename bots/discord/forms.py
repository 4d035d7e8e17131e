"""A template's missing slots as a Discord modal (interaction response type 9), and the reply
that hands the submitted values to the shared command (`reply.form`, see bots/skills.py).

The modal is the first response to the slash command (Discord allows no modal after a defer);
its submission is a new interaction, which is deferred and then answered with follow-ups, like
any slash command. The modal's shape comes from `bots.common.forms.discord_modal`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import discord

from bots.common.forms import discord_modal, discord_values
from bots.discord.reply import InteractionReply
from engine.flows.templates import Template

if TYPE_CHECKING:
    from bots.discord.adapter import DiscordAdapter

MODAL_TIMEOUT_S = 15 * 60       # an interaction's token lives 15 minutes


class TemplateModal(discord.ui.Modal):
    def __init__(self, adapter: "DiscordAdapter", template: Template, given: dict, suffix: str):
        spec = discord_modal(template, given, custom_id_suffix=f":{suffix}")
        super().__init__(title=spec["title"], custom_id=spec["custom_id"], timeout=MODAL_TIMEOUT_S)
        for row in spec["components"]:
            field = row["components"][0]
            self.add_item(discord.ui.TextInput(
                label=field["label"], custom_id=field["custom_id"], required=field["required"],
                style=discord.TextStyle.paragraph if field["style"] == 2 else discord.TextStyle.short,
                max_length=field["max_length"], default=field.get("value")))
        self.adapter, self.template, self.given = adapter, template, given

    def submitted(self) -> dict:
        typed = {item.custom_id: item.value for item in self.children if isinstance(item, discord.ui.TextInput)}
        return {**self.given, **discord_values(self.template, typed)}

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await self.adapter.run_template(interaction, self.template, self.submitted())


class FormReply(InteractionReply):
    """An interaction's reply whose form is already filled in (by the modal or the options)."""

    def __init__(self, adapter: "DiscordAdapter", channel_id: int, followup: discord.Webhook,
                 created_at: float, values: dict):
        super().__init__(adapter, channel_id, followup, created_at)
        self.values = values

    @classmethod
    def of(cls, adapter: "DiscordAdapter", interaction: discord.Interaction, values: dict) -> "FormReply":
        return cls(adapter, interaction.channel_id, interaction.followup, interaction.created_at.timestamp(),
                   values)

    async def form(self, template: Template, values: dict) -> dict:
        return dict(self.values)
