"""Models per channel and per template (issue 17, item 4): CONFAB_CHANNELS_FILE names a chat and an
image model, LoRA adapters included, for a Slack or Discord channel and for each seed template;
the commands run on them through the real engine (SmolLM2 with a chat LoRA, the tiny SD pipeline
with an image LoRA)."""
from __future__ import annotations

import asyncio
import io
import json

import pytest

from bots.common import image_commands
from bots.common.channels import parse_channels
from bots.common.commands import Commands, Request
from bots.console.console import ConsoleReply
from bots.skills import register_commands
from engine import ConfigError, Engine, Origin
from tests.conftest import CHAT_MODEL, make_settings, requires_chat_model
from tests.models.tiny_diffusers import tiny_sd
from tests.models.tiny_lora import make_chat_lora, make_image_lora

CONFIG = {"channel_models": [{"platform": "slack", "channel": "C1", "chat": "brand-voice"},
                             {"platform": "discord", "channel": "42", "image": "house-style"}],
          "template_models": {"promo": {"chat": "brand-voice", "image": "house-style"},
                              "write": {"chat": CHAT_MODEL}}}


def test_a_templates_model_goes_before_its_channels_and_both_before_the_default():
    config = parse_channels(CONFIG)
    assert config.model_for("chat", "slack", "C1") == "brand-voice"
    assert config.model_for("chat", "slack", "C1", "write") == CHAT_MODEL
    assert config.model_for("chat", "slack", "C2") == ""
    assert config.model_for("image", "discord", "42") == "house-style"
    assert config.model_for("image", "slack", "C2", "promo") == "house-style"


@pytest.mark.parametrize("bad, words", [
    ({"channel_models": [{"platform": "irc", "channel": "x", "chat": "m"}]}, "platform"),
    ({"channel_models": [{"platform": "slack", "channel": "C1", "voice": "m"}]}, "unknown keys: voice"),
    ({"template_models": {"promo": {"chat": 3}}}, "must be a model's name"),
    ({"template_models": ["promo"]}, "template -> "),
])
def test_bad_model_settings_are_refused_with_words(bad, words):
    with pytest.raises(ConfigError, match=words):
        parse_channels(bad)


@requires_chat_model
async def test_commands_run_on_the_channels_and_templates_adapters(tmp_path, shared_models_dir):
    pytest.importorskip("peft")
    channels = tmp_path / "channels.json"
    channels.write_text(json.dumps(CONFIG))
    engine = Engine(make_settings(tmp_path, shared_models_dir, max_tokens=12, threads=2,
                                  channels_file=str(channels), max_image_side=256), gpu_total=None)
    engine.registry.add(make_chat_lora(tmp_path / "brand.gguf", engine.registry.get(CHAT_MODEL).path),
                        kind="lora", base=CHAT_MODEL, name="brand-voice")
    engine.registry.add(tiny_sd(), name="tiny-sd")
    engine.registry.add(make_image_lora(tmp_path / "style", tiny_sd()), kind="lora", name="house-style")
    engine.refresh_models()
    await engine.start(resume=False)
    commands = Commands(engine)
    register_commands(commands)
    image_commands.register_commands(commands)

    async def run(platform: str, channel: str, text: str, typed: str = "") -> list[str]:
        before = set(engine._handles)
        reply = ConsoleReply(io.StringIO(), engine.settings.data_path / "console", io.StringIO(typed))
        request = Request(Origin(platform=platform, user="u1", channel=channel), f"{platform}:{channel}", text)
        await asyncio.wait_for(commands.handle(request, reply), 240)
        return [h.job.model for j, h in engine._handles.items() if j not in before]

    try:
        assert await run("slack", "C1", "/ask what do bees make?") == ["brand-voice"]
        assert await run("slack", "C2", "/ask what do bees make?") == [CHAT_MODEL]
        assert await run("slack", "C1", "/write story a lighthouse") == [CHAT_MODEL]   # write's own
        assert await run("discord", "42", "/imagine a red boat --steps 2") == ["house-style"]
        promo = "product=Tea; size=250 g; container=tin; price=4; store=deli; setting=rain; output=both"
        assert await run("slack", "C2", f"/promo {promo}") == ["brand-voice", "house-style"]
    finally:
        await engine.close()
