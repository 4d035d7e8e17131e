"""Per-channel settings from CONFAB_CHANNELS_FILE: support channels and support groups.

The file is JSON:

    {
      "support_groups": {
        "helpdesk": {"slack_usergroup": "S0123ABC", "discord_role": "998877665544",
                     "members": ["slack:U024BE7LH", "discord:80351110224678912"]}
      },
      "support_channels": [
        {"platform": "slack", "channel": "C0123ABC", "group": "helpdesk"},
        {"platform": "discord", "channel": "112233445566", "group": "helpdesk",
         "when_unsure": "silent", "min_score": 0.5, "escalate_minutes": 15}
      ]
    }

A channel's optional keys (`when_unsure`, `min_score`, `min_rerank` (with a reranker), `min_coverage`,
`grounding_min`, `handover_text`, `top_k`, `answer_mode`, `escalate_minutes`) override the CONFAB_KB_* settings. A group is the
people who answer: a Slack user group, a Discord role, and any members listed by
`platform:user_id`. Other top-level keys are left to other parts of Confab.

Models per channel and per template (a model's name, a LoRA adapter's included; a template's
choice goes before its channel's, and either before CONFAB_CHAT_MODEL / CONFAB_IMAGE_MODEL):

      "channel_models": [{"platform": "slack", "channel": "C0123ABC", "chat": "support-tone"}],
      "template_models": {"promo": {"chat": "brand-voice", "image": "house-style"}}
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from engine import ConfigError
from engine.kb import Policy

_CHANNEL_KEYS = {"platform", "channel", "group", "when_unsure", "min_score", "min_rerank", "min_coverage",
                 "grounding_min", "handover_text", "top_k", "answer_mode", "escalate_minutes"}


@dataclass(frozen=True)
class SupportGroup:
    name: str
    slack_usergroup: str = ""
    discord_role: str = ""
    members: frozenset[str] = frozenset()     # platform:user_id

    def mention(self, platform: str) -> str:
        """How to ping the group on the platform ("" when it has no group or role there)."""
        if platform == "slack" and self.slack_usergroup:
            return f"<!subteam^{self.slack_usergroup}>"
        if platform == "discord" and self.discord_role:
            return f"<@&{self.discord_role}>"
        return " ".join(f"<@{m.split(':', 1)[1]}>" for m in sorted(self.members)
                        if m.startswith(platform + ":"))


@dataclass(frozen=True)
class SupportChannel:
    platform: str
    channel: str
    group: str = ""
    overrides: dict = field(default_factory=dict, hash=False, compare=False)

    def policy(self, settings):
        keys = ("when_unsure", "min_score", "min_rerank", "min_coverage", "grounding_min", "handover_text",
                "top_k", "answer_mode")
        return Policy.from_settings(settings, **{k: self.overrides.get(k) for k in keys})

    def escalate_minutes(self, settings) -> float:
        return float(self.overrides.get("escalate_minutes") or settings.kb_escalate_minutes)


MODEL_KINDS = ("chat", "image")


@dataclass
class ChannelsConfig:
    groups: dict[str, SupportGroup] = field(default_factory=dict)
    support: dict[tuple[str, str], SupportChannel] = field(default_factory=dict)
    channel_models: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    template_models: dict[str, dict[str, str]] = field(default_factory=dict)

    def model_for(self, kind: str, platform: str, channel: str, template: str = "") -> str:
        """The model configured for `kind` work of `template` in a channel, or "" (the default)."""
        return (self.template_models.get(template, {}).get(kind)
                or self.channel_models.get((platform, str(channel)), {}).get(kind) or "")

    def support_for(self, platform: str, channel: str) -> SupportChannel | None:
        return self.support.get((platform, str(channel)))

    def group_of(self, channel: SupportChannel) -> SupportGroup | None:
        return self.groups.get(channel.group)

    def is_support_member(self, channel: SupportChannel, user: str,
                          memberships: tuple[str, ...] | frozenset[str] = ()) -> bool:
        """Whether `user` answers for the channel's group: listed by id, or holding the group's
        Slack user group or Discord role (`memberships`: the ids the adapter knows they hold)."""
        group = self.group_of(channel)
        if group is None:
            return False
        if f"{channel.platform}:{user}" in group.members:
            return True
        mine = set(memberships)
        return bool((group.slack_usergroup and group.slack_usergroup in mine)
                    or (group.discord_role and group.discord_role in mine))


def load_channels(path: str | Path | None) -> ChannelsConfig:
    """Read the channels file; an empty path gives an empty configuration."""
    if not path:
        return ChannelsConfig()
    p = Path(path).expanduser()
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"CONFAB_CHANNELS_FILE: {p} does not exist.") from None
    except ValueError as e:
        raise ConfigError(f"CONFAB_CHANNELS_FILE: {p} is not valid JSON ({e}).") from None
    return parse_channels(data, str(p))


def parse_channels(data, where: str = "the channels file") -> ChannelsConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must hold a JSON object.")
    config = ChannelsConfig()
    groups = data.get("support_groups") or {}
    if not isinstance(groups, dict):
        raise ConfigError(f"{where}: support_groups must be an object of name -> group.")
    for name, g in groups.items():
        if not isinstance(g, dict):
            raise ConfigError(f"{where}: support group '{name}' must be an object.")
        members = g.get("members") or []
        if not isinstance(members, list) or not all(isinstance(m, str) and ":" in m for m in members):
            raise ConfigError(f"{where}: support group '{name}': members are 'platform:user_id' strings.")
        config.groups[name] = SupportGroup(name, str(g.get("slack_usergroup") or ""),
                                           str(g.get("discord_role") or ""), frozenset(members))
    channels = data.get("support_channels") or []
    if not isinstance(channels, list):
        raise ConfigError(f"{where}: support_channels must be a list.")
    for i, c in enumerate(channels):
        if not isinstance(c, dict) or c.get("platform") not in ("slack", "discord") or not c.get("channel"):
            raise ConfigError(f"{where}: support_channels[{i}] needs a platform (slack or discord) "
                              "and a channel id.")
        unknown = set(c) - _CHANNEL_KEYS
        if unknown:
            raise ConfigError(f"{where}: support_channels[{i}] has unknown keys: {', '.join(sorted(unknown))}.")
        group = str(c.get("group") or "")
        if group and group not in config.groups:
            raise ConfigError(f"{where}: support_channels[{i}] names the group '{group}', which "
                              "support_groups does not define.")
        if c.get("when_unsure") not in (None, "handover", "silent"):
            raise ConfigError(f"{where}: support_channels[{i}].when_unsure must be handover or silent.")
        for key in ("min_score", "min_rerank", "min_coverage", "grounding_min"):
            v = c.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1):
                raise ConfigError(f"{where}: support_channels[{i}].{key} must be between 0 and 1.")
        overrides = {k: v for k, v in c.items() if k not in ("platform", "channel", "group")}
        key = (c["platform"], str(c["channel"]))
        config.support[key] = SupportChannel(key[0], key[1], group, overrides)
    _parse_models(data, where, config)
    return config


def _model_names(entry: dict, where: str, allowed: set[str]) -> dict[str, str]:
    unknown = set(entry) - allowed
    if unknown:
        raise ConfigError(f"{where} has unknown keys: {', '.join(sorted(unknown))} (models are "
                          f"named by kind: {', '.join(MODEL_KINDS)}).")
    out = {}
    for kind in MODEL_KINDS:
        name = entry.get(kind)
        if name is not None:
            if not isinstance(name, str) or not name.strip():
                raise ConfigError(f"{where}.{kind} must be a model's name.")
            out[kind] = name.strip()
    return out


def _parse_models(data: dict, where: str, config: ChannelsConfig) -> None:
    channels = data.get("channel_models") or []
    if not isinstance(channels, list):
        raise ConfigError(f"{where}: channel_models must be a list.")
    for i, c in enumerate(channels):
        if not isinstance(c, dict) or c.get("platform") not in ("slack", "discord") or not c.get("channel"):
            raise ConfigError(f"{where}: channel_models[{i}] needs a platform (slack or discord) "
                              "and a channel id.")
        config.channel_models[(c["platform"], str(c["channel"]))] = _model_names(
            c, f"{where}: channel_models[{i}]", {"platform", "channel", *MODEL_KINDS})
    templates = data.get("template_models") or {}
    if not isinstance(templates, dict) or not all(isinstance(v, dict) for v in templates.values()):
        raise ConfigError(f"{where}: template_models must be an object of template -> "
                          "{\"chat\": MODEL, \"image\": MODEL}.")
    for name, t in templates.items():
        config.template_models[name] = _model_names(t, f"{where}: template_models.{name}", set(MODEL_KINDS))
