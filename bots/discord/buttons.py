"""Buttons on Confab's messages: cancel a queued or running job; speak a text answer; draw a
picture again with another seed.

They are `DynamicItem`s: the state lives in the custom_id, so a click is understood after a
restart too, and no view is kept in memory per message. A click is acknowledged at once
(deferred), then answered by its listener; a Re-roll is kept in the store before its defer.
discord.py makes a button anew from each click's custom_id, so the button finds its listener on
the client that received the click (`ConfabClient.listeners`, wired in client.py).
"""
from __future__ import annotations

import re

import discord

JOB_ID = re.compile(r"job_[0-9a-f]{20}")


class CancelButton(discord.ui.DynamicItem[discord.ui.Button], template=r"confab:cancel:(?P<job>job_[0-9a-f]{20})"):
    def __init__(self, job_id: str):
        super().__init__(discord.ui.Button(label="Cancel", emoji="🛑", style=discord.ButtonStyle.secondary,
                                           custom_id=f"confab:cancel:{job_id}"))
        self.job_id = job_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> "CancelButton":
        return cls(match["job"])

    async def callback(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await interaction.client.listeners.cancel(interaction, self.job_id)


class SpeakButton(discord.ui.DynamicItem[discord.ui.Button], template=r"confab:speak"):
    def __init__(self):
        super().__init__(discord.ui.Button(label="Speak this", emoji="🔊", style=discord.ButtonStyle.secondary,
                                           custom_id="confab:speak"))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> "SpeakButton":
        return cls()

    async def callback(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer()      # a deferred update: no message of its own yet
        await interaction.client.listeners.speak(interaction)


class RerollButton(discord.ui.DynamicItem[discord.ui.Button], template=r"confab:reroll:(?P<job>job_[0-9a-f]{20})"):
    """Re-roll an /imagine picture. A custom_id holds at most 100 characters, too few for the
    request itself: it names the finished job, whose stored record holds the request."""

    def __init__(self, job_id: str):
        super().__init__(discord.ui.Button(label="Re-roll", emoji="🎲", style=discord.ButtonStyle.secondary,
                                           custom_id=f"confab:reroll:{job_id}"))
        self.job_id = job_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> "RerollButton":
        return cls(match["job"])

    async def callback(self, interaction: discord.Interaction) -> None:
        # kept in the store, then deferred (thinking: the new picture gets a message of its own)
        await interaction.client.listeners.reroll(interaction, self.job_id)


def view_of(*items: discord.ui.Item) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for item in items:
        view.add_item(item)
    return view


def job_id_in(status: str) -> str | None:
    """The job id in a stream's status line ("queued (job_…)")."""
    m = JOB_ID.search(status or "")
    return m.group(0) if m else None


class FeedbackButton(discord.ui.DynamicItem[discord.ui.Button],
                     template=r"confab:kb:(?P<verdict>yes|no):(?P<outcome>\d+|-):(?P<channel>\d+)"):
    """Helpful / Not helpful under a support answer. The custom_id names the stored outcome and
    the support channel (a thread's interaction only says the thread), so a press counts after
    a restart too."""

    def __init__(self, helpful: bool, outcome_id: int | None, channel: str):
        verdict = "yes" if helpful else "no"
        super().__init__(discord.ui.Button(
            label="Helpful" if helpful else "Not helpful", emoji="👍" if helpful else "👎",
            style=discord.ButtonStyle.secondary,
            custom_id=f"confab:kb:{verdict}:{outcome_id if outcome_id is not None else '-'}:{channel}"))
        self.helpful, self.outcome_id, self.channel = helpful, outcome_id, channel

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> "FeedbackButton":
        outcome = match["outcome"]
        return cls(match["verdict"] == "yes", None if outcome == "-" else int(outcome), match["channel"])

    async def callback(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await interaction.client.listeners.feedback(interaction, self.helpful, self.outcome_id, self.channel)
