"""The shared command set as Discord application commands, with typed options.

Each command only turns its options into a typed `Call` of the shared command (its file apart)
and hands it to `on_slash`, which defers the interaction at once and answers with follow-ups;
a writing template's options go to `on_template` as its slots. Private answers (/queue,
/cancel, /models, /help, /reset) are ephemeral.
"""
from __future__ import annotations

from typing import Awaitable, Callable, Optional

import discord
from discord import app_commands

from bots.common.commands import Call
from engine.flows.templates import PROMO_OUTPUTS

PRIVATE = {"queue", "cancel", "models", "help", "reset"}

OnSlash = Callable[[discord.Interaction, Call, Optional[discord.Attachment]], Awaitable[None]]
OnTemplate = Callable[[discord.Interaction, str, dict], Awaitable[None]]


def build_tree(client: discord.Client, on_slash: OnSlash, on_template: OnTemplate) -> app_commands.CommandTree:
    tree = app_commands.CommandTree(client)

    @tree.command(name="ask", description="Ask Confab a question")
    @app_commands.describe(question="What you want to know")
    async def ask(interaction: discord.Interaction, question: app_commands.Range[str, 1, 4000]) -> None:
        await on_slash(interaction, Call("ask", question), None)

    @tree.command(name="speak", description="Hear Confab say something, as a voice message")
    @app_commands.describe(text="What Confab should say")
    async def speak(interaction: discord.Interaction, text: app_commands.Range[str, 1, 4000]) -> None:
        await on_slash(interaction, Call("speak", text), None)

    @tree.command(name="transcribe", description="Turn speech in an audio file into text")
    @app_commands.describe(file="An audio file or voice message (ogg, mp3, m4a, wav, webm, flac)")
    async def transcribe(interaction: discord.Interaction, file: discord.Attachment) -> None:
        await on_slash(interaction, Call("transcribe"), file)

    @tree.command(name="voicenote", description="Ask with a recording: the answer in text and aloud")
    @app_commands.describe(file="Your question, recorded (ogg, mp3, m4a, wav, webm, flac)")
    async def voicenote(interaction: discord.Interaction, file: discord.Attachment) -> None:
        await on_slash(interaction, Call("voicenote"), file)

    @tree.command(name="translate", description="Translate text")
    @app_commands.describe(text="What to translate", language="The language to translate into (default: English)")
    async def translate(interaction: discord.Interaction, text: app_commands.Range[str, 1, 4000],
                        language: Optional[app_commands.Range[str, 2, 40]] = None) -> None:
        await on_slash(interaction, Call("translate", text, {"languages": language or "English"}), None)

    @tree.command(name="promo", description="A promotional text (and a poster) for a product")
    @app_commands.describe(product="What you are promoting", output="Text, a poster image, or both",
                           size="Size (e.g. 500 ml, large)", container="Container (bottle, box, can…)",
                           price="Price", store="Type of store (supermarket, boutique, online…)",
                           setting="Setting (beach in summer, cosy kitchen…)")
    @app_commands.choices(output=[app_commands.Choice(name=o, value=o) for o in PROMO_OUTPUTS])
    async def promo(interaction: discord.Interaction, product: app_commands.Range[str, 1, 200],
                    output: Optional[app_commands.Choice[str]] = None,
                    size: Optional[app_commands.Range[str, 1, 200]] = None,
                    container: Optional[app_commands.Range[str, 1, 200]] = None,
                    price: Optional[app_commands.Range[str, 1, 200]] = None,
                    store: Optional[app_commands.Range[str, 1, 200]] = None,
                    setting: Optional[app_commands.Range[str, 1, 200]] = None) -> None:
        # A modal holds five text inputs: the product comes as an option, the choice of output
        # too (a modal takes text only); the other five are asked in the modal when not given.
        await on_template(interaction, "promo", {
            "product": product, "output": output.value if output else None, "size": size,
            "container": container, "price": price, "store": store, "setting": setting})

    @tree.command(name="imagine", description="Make a picture from a description")
    @app_commands.describe(prompt="What the picture should show")
    async def imagine(interaction: discord.Interaction, prompt: app_commands.Range[str, 1, 1000]) -> None:
        await on_slash(interaction, Call("imagine", prompt), None)

    @tree.command(name="queue", description="Your jobs, their place in line and when they start (only you see it)")
    async def queue(interaction: discord.Interaction) -> None:
        await on_slash(interaction, Call("queue"), None)

    @tree.command(name="cancel", description="Cancel your last job, or the one named")
    @app_commands.describe(job="A job id from /queue (default: your last job)")
    async def cancel(interaction: discord.Interaction, job: Optional[app_commands.Range[str, 1, 40]] = None) -> None:
        await on_slash(interaction, Call("cancel", job or ""), None)

    @tree.command(name="models", description="The models installed on this Confab")
    async def models(interaction: discord.Interaction) -> None:
        await on_slash(interaction, Call("models"), None)

    @tree.command(name="reset", description="Make Confab forget your conversation in this channel")
    async def reset(interaction: discord.Interaction) -> None:
        await on_slash(interaction, Call("reset"), None)

    @tree.command(name="help", description="What Confab can do")
    async def help_(interaction: discord.Interaction) -> None:
        await on_slash(interaction, Call("help"), None)

    return tree
