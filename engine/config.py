"""Confab's settings: the engine's here, each door's in its own class on the same machinery.

Explicit arguments win over the environment, the environment over `.env`, and `.env` over the
defaults. A bad value is reported with the variable's name, never silently ignored. Every
variable, the doors' too, is listed with a comment in `.env.example`.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path


class ConfigError(ValueError):
    """A setting has a value Confab cannot use."""


def _default_data_dir() -> str:
    return str(Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "confab")


@dataclass(frozen=True)
class EnvSettings:
    """Settings read from environment variables, the base of the engine's and each door's own.

    Each field names its variable in its metadata ({"env": NAME}, and "secret": True for a
    credential, which `redacted` and the log filter blank)."""

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, dotenv: str | Path | None = ".env", **overrides):
        fields = dataclasses.fields(cls)
        unknown = set(overrides) - {f.name for f in fields}
        if unknown:
            raise TypeError(f"{cls.__name__} has no setting {', '.join(sorted(unknown))}")
        source: dict[str, str] = {}
        if dotenv and Path(dotenv).is_file():
            from dotenv import dotenv_values
            source.update({k: v for k, v in dotenv_values(dotenv).items() if v is not None})
        source.update(os.environ if env is None else env)
        values = {}
        for f in fields:
            name = f.metadata.get("env")
            if f.name in overrides and overrides[f.name] is not None:
                values[f.name] = _coerce(f, overrides[f.name], f"--{f.name.replace('_', '-')}")
            elif name and source.get(name, "") != "":
                values[f.name] = _coerce(f, source[name], name)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise ConfigError, naming the variable, for a value that cannot work."""

    @classmethod
    def env_name(cls, field_name: str) -> str:
        for f in dataclasses.fields(cls):
            if f.name == field_name:
                return f.metadata.get("env", field_name)
        return field_name

    def require_positive(self, *names: str) -> None:
        for name in names:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{self.env_name(name)} must be a positive number, not {getattr(self, name)}.")

    def require_limit(self, *names: str) -> None:
        """A limit over time, where 0 means none."""
        for name in names:
            if getattr(self, name) < 0:
                raise ConfigError(f"{self.env_name(name)} must be 0 (no limit) or more, not {getattr(self, name)}.")

    def redacted(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = "***" if f.metadata.get("secret") and v else v
        return out


@dataclass(frozen=True)
class Settings(EnvSettings):
    """The engine's settings; the doors' own are theirs (bots/slack/settings.py, ...)."""

    # where Confab listens and keeps its state
    host: str = field(default="127.0.0.1", metadata={"env": "CONFAB_HOST"})
    port: int = field(default=8080, metadata={"env": "CONFAB_PORT"})
    data_dir: str = field(default_factory=_default_data_dir, metadata={"env": "CONFAB_DATA_DIR"})
    models_dir: str = field(default="", metadata={"env": "CONFAB_MODELS_DIR"})
    api_keys: tuple[str, ...] = field(default=(), metadata={"env": "CONFAB_API_KEYS", "secret": True},
                                     repr=False)
    log_level: str = field(default="INFO", metadata={"env": "CONFAB_LOG_LEVEL"})

    # models and devices
    device: str = field(default="auto", metadata={"env": "CONFAB_DEVICE"})
    gpu_budget_mb: int = field(default=0, metadata={"env": "CONFAB_GPU_BUDGET_MB"})
    cpu_budget_mb: int = field(default=0, metadata={"env": "CONFAB_CPU_BUDGET_MB"})
    threads: int = field(default=0, metadata={"env": "CONFAB_THREADS"})
    keep_alive_s: float = field(default=300.0, metadata={"env": "CONFAB_KEEP_ALIVE"})
    pinned_models: tuple[str, ...] = field(default=(), metadata={"env": "CONFAB_PINNED_MODELS"})
    default_chat_model: str = field(default="", metadata={"env": "CONFAB_CHAT_MODEL"})
    default_stt_model: str = field(default="", metadata={"env": "CONFAB_STT_MODEL"})
    default_tts_model: str = field(default="", metadata={"env": "CONFAB_TTS_MODEL"})
    context_tokens: int = field(default=4096, metadata={"env": "CONFAB_CONTEXT_TOKENS"})
    system_prompt: str = field(default="You are a helpful assistant.",
                               metadata={"env": "CONFAB_SYSTEM_PROMPT"})
    # chat runners (llama.cpp's server): jobs a loaded chat model takes at once (0: 5 on the
    # CPU, 9 on a GPU: 4 or 8 for everyone and one kept for class 0; fewer when the memory
    # budget cannot hold their KV cache), the prompt
    # cache each runner keeps in RAM, and per-model sampling overrides (a JSON file:
    # {"model-name": {"temperature": 0.2, ...}, "*": {...}})
    chat_slots: int = field(default=0, metadata={"env": "CONFAB_CHAT_SLOTS"})
    prompt_cache_mb: int = field(default=256, metadata={"env": "CONFAB_PROMPT_CACHE_MB"})
    sampling_file: str = field(default="", metadata={"env": "CONFAB_SAMPLING_FILE"})
    # chat models served by an OpenAI-compatible engine elsewhere: NAME=URL[#REMOTE_NAME], ...
    remote_chat: tuple[str, ...] = field(default=(), metadata={"env": "CONFAB_REMOTE_CHAT"})
    remote_chat_key: str = field(default="", metadata={"env": "CONFAB_REMOTE_CHAT_KEY", "secret": True},
                                 repr=False)

    # the scheduler
    queue_max: int = field(default=256, metadata={"env": "CONFAB_QUEUE_MAX"})
    user_queue_max: int = field(default=8, metadata={"env": "CONFAB_USER_QUEUE_MAX"})
    aging_s: float = field(default=30.0, metadata={"env": "CONFAB_AGING_SECONDS"})
    class2_promote_s: float = field(default=120.0, metadata={"env": "CONFAB_CLASS2_PROMOTE_SECONDS"})
    job_timeout_s: float = field(default=600.0, metadata={"env": "CONFAB_JOB_TIMEOUT"})
    concurrency: int = field(default=1, metadata={"env": "CONFAB_CONCURRENCY"})

    # beyond one process: the Redis queue (front host and GPU workers), and PostgreSQL
    queue_url: str = field(default="", metadata={"env": "CONFAB_QUEUE_URL"})
    lease_s: float = field(default=30.0, metadata={"env": "CONFAB_LEASE_SECONDS"})
    database_url: str = field(default="", metadata={"env": "CONFAB_DATABASE_URL", "secret": True},
                              repr=False)

    # limits on each person and key over time (0: no limit; admins are never limited)
    user_rate: int = field(default=0, metadata={"env": "CONFAB_USER_RATE"})
    key_rate: int = field(default=0, metadata={"env": "CONFAB_KEY_RATE"})
    daily_gpu_seconds: float = field(default=0.0, metadata={"env": "CONFAB_DAILY_GPU_SECONDS"})

    # limits on what one request may ask for
    max_body_bytes: int = field(default=8 * 2**20, metadata={"env": "CONFAB_MAX_BODY_BYTES"})
    max_prompt_chars: int = field(default=32_000, metadata={"env": "CONFAB_MAX_PROMPT_CHARS"})
    max_tokens: int = field(default=1024, metadata={"env": "CONFAB_MAX_TOKENS"})
    max_audio_bytes: int = field(default=25 * 2**20, metadata={"env": "CONFAB_MAX_AUDIO_BYTES"})
    max_audio_seconds: float = field(default=600.0, metadata={"env": "CONFAB_MAX_AUDIO_SECONDS"})
    max_speech_chars: int = field(default=4096, metadata={"env": "CONFAB_MAX_SPEECH_CHARS"})
    ffmpeg_timeout_s: float = field(default=30.0, metadata={"env": "CONFAB_FFMPEG_TIMEOUT"})
    bark_wait_budget_s: float = field(default=20.0, metadata={"env": "CONFAB_BARK_WAIT_BUDGET"})
    history_messages: int = field(default=20, metadata={"env": "CONFAB_HISTORY_MESSAGES"})

    # speech
    stt_vad: bool = field(default=True, metadata={"env": "CONFAB_STT_VAD"})
    stt_beam_size: int = field(default=5, metadata={"env": "CONFAB_STT_BEAM_SIZE"})
    fast_tts_model: str = field(default="", metadata={"env": "CONFAB_FAST_TTS_MODEL"})
    voice_max_tokens: int = field(default=200, metadata={"env": "CONFAB_VOICE_MAX_TOKENS"})

    # images: generation, understanding, and the files Confab serves
    default_image_model: str = field(default="", metadata={"env": "CONFAB_IMAGE_MODEL"})
    default_vision_model: str = field(default="", metadata={"env": "CONFAB_VISION_MODEL"})
    max_image_prompt_chars: int = field(default=1000, metadata={"env": "CONFAB_MAX_IMAGE_PROMPT_CHARS"})
    max_image_side: int = field(default=1024, metadata={"env": "CONFAB_MAX_IMAGE_SIDE"})
    max_image_steps: int = field(default=50, metadata={"env": "CONFAB_MAX_IMAGE_STEPS"})
    max_images: int = field(default=4, metadata={"env": "CONFAB_MAX_IMAGES"})
    max_image_bytes: int = field(default=10 * 2**20, metadata={"env": "CONFAB_MAX_IMAGE_BYTES"})
    max_image_pixels: int = field(default=36_000_000, metadata={"env": "CONFAB_MAX_IMAGE_PIXELS"})
    image_url_ttl_s: float = field(default=3600.0, metadata={"env": "CONFAB_IMAGE_URL_TTL"})
    image_url_hosts: tuple[str, ...] = field(default=(), metadata={"env": "CONFAB_IMAGE_URL_HOSTS"})
    public_url: str = field(default="", metadata={"env": "CONFAB_PUBLIC_URL"})

    # embeddings and the support knowledge base
    default_embedding_model: str = field(default="", metadata={"env": "CONFAB_EMBEDDING_MODEL"})
    kb_chunk_chars: int = field(default=900, metadata={"env": "CONFAB_KB_CHUNK_CHARS"})
    kb_max_file_bytes: int = field(default=20 * 2**20, metadata={"env": "CONFAB_KB_MAX_FILE_BYTES"})
    kb_top_k: int = field(default=20, metadata={"env": "CONFAB_KB_TOP_K"})
    # calibrated with `confab kb eval --tune` on tests/fixtures/kb/tidewell, orrin, pantrio and kelvo
    # together (silence 0.9)
    kb_min_score: float = field(default=0.47, metadata={"env": "CONFAB_KB_MIN_SCORE"})
    kb_min_coverage: float = field(default=0.30, metadata={"env": "CONFAB_KB_MIN_COVERAGE"})
    # the best document's score over the next document's; -1 is off (it did not separate
    # answerable from unanswerable questions on the tuning knowledge bases)
    kb_min_margin: float = field(default=-1.0, metadata={"env": "CONFAB_KB_MIN_MARGIN"})
    kb_grounding_min: float = field(default=0.75, metadata={"env": "CONFAB_KB_GROUNDING_MIN"})
    # a cross-encoder reranker (none ships offline; `confab models pull ms-marco-minilm-l6-v2`):
    # empty uses the first one installed, "off" none; its score is then the relevance the gate
    # compares with kb_min_rerank instead of kb_min_score
    kb_reranker: str = field(default="", metadata={"env": "CONFAB_KB_RERANKER"})
    kb_min_rerank: float = field(default=0.5, metadata={"env": "CONFAB_KB_MIN_RERANK"})
    kb_when_unsure: str = field(default="handover", metadata={"env": "CONFAB_KB_WHEN_UNSURE"})
    kb_answer_mode: str = field(default="generate", metadata={"env": "CONFAB_KB_ANSWER_MODE"})
    kb_drafting: str = field(default="extract", metadata={"env": "CONFAB_KB_DRAFTING"})
    kb_handover_text: str = field(default="Thanks for your question! Someone from the support team "
                                  "will follow up here.", metadata={"env": "CONFAB_KB_HANDOVER_TEXT"})
    kb_escalate_minutes: float = field(default=30.0, metadata={"env": "CONFAB_KB_ESCALATE_MINUTES"})

    # who is an admin (priority class 0), as platform:user_id entries
    admins: tuple[str, ...] = field(default=(), metadata={"env": "CONFAB_ADMINS"})
    channels_file: str = field(default="", metadata={"env": "CONFAB_CHANNELS_FILE"})

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser()

    @property
    def models_path(self) -> Path:
        return Path(self.models_dir).expanduser() if self.models_dir else self.data_path / "models"

    def sampling_overrides(self, model: str) -> dict:
        """The operator's sampling settings for `model` (its own entry over the "*" entry)."""
        table = _read_sampling_file(self.sampling_file) if self.sampling_file else {}
        return {**table.get("*", {}), **table.get(model, {})}

    def remote_chat_models(self) -> dict[str, tuple[str, str]]:
        """name -> (base URL, the model's name on that engine)."""
        out = {}
        for entry in self.remote_chat:
            name, _, rest = entry.partition("=")
            url, _, remote = rest.partition("#")
            out[name.strip()] = (url.strip(), remote.strip() or name.strip())
        return out

    def validate(self) -> None:
        positive = ["port", "queue_max", "user_queue_max", "concurrency", "max_body_bytes",
                    "max_prompt_chars", "max_tokens", "context_tokens", "max_audio_bytes",
                    "max_audio_seconds", "max_speech_chars", "ffmpeg_timeout_s", "stt_beam_size",
                    "voice_max_tokens"]
        positive += ["max_image_prompt_chars", "max_image_side", "max_image_steps", "max_images",
                     "max_image_bytes", "max_image_pixels", "image_url_ttl_s"]
        positive += ["lease_s"]
        if self.queue_url and not self.queue_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"CONFAB_QUEUE_URL must be a redis:// address, not '{self.queue_url}'.")
        if self.database_url and not self.database_url.startswith(("postgresql://", "postgres://", "sqlite:")):
            raise ConfigError("CONFAB_DATABASE_URL must be a postgresql:// address (or sqlite:PATH).")
        positive += ["kb_chunk_chars", "kb_max_file_bytes", "kb_top_k", "kb_escalate_minutes"]
        if self.kb_answer_mode not in ("generate", "excerpt"):
            raise ConfigError(f"CONFAB_KB_ANSWER_MODE must be generate or excerpt, not '{self.kb_answer_mode}'.")
        if self.kb_drafting not in ("extract", "free"):
            raise ConfigError(f"CONFAB_KB_DRAFTING must be extract or free, not '{self.kb_drafting}'.")
        if not -1 <= self.kb_min_margin <= 1:
            raise ConfigError(f"CONFAB_KB_MIN_MARGIN must be between -1 and 1, not {self.kb_min_margin}.")
        if self.kb_when_unsure not in ("handover", "silent"):
            raise ConfigError(f"CONFAB_KB_WHEN_UNSURE must be handover or silent, not '{self.kb_when_unsure}'.")
        for name in ("kb_min_score", "kb_min_coverage", "kb_grounding_min", "kb_min_rerank"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{self.env_name(name)} must be between 0 and 1, not {getattr(self, name)}.")
        self.require_positive(*positive)
        self.require_limit("user_rate", "key_rate", "daily_gpu_seconds")
        if self.chat_slots < 0 or self.prompt_cache_mb < 0:
            raise ConfigError("CONFAB_CHAT_SLOTS and CONFAB_PROMPT_CACHE_MB must be 0 or more.")
        for entry in self.remote_chat:
            name, _, url = entry.partition("=")
            if not name.strip() or not url.strip().startswith(("http://", "https://")):
                raise ConfigError(f"CONFAB_REMOTE_CHAT entries are NAME=http(s)://HOST/v1[#REMOTE_NAME], "
                                  f"not '{entry}'.")
        if self.sampling_file:
            _read_sampling_file(self.sampling_file)
        if self.device not in ("auto", "cuda", "cpu"):
            raise ConfigError(f"CONFAB_DEVICE must be auto, cuda or cpu, not '{self.device}'.")


SAMPLING_RANGES = {"temperature": (0, 2), "top_p": (0, 1), "top_k": (0, 1000), "min_p": (0, 1),
                   "repeat_penalty": (0, 2), "presence_penalty": (-2, 2), "frequency_penalty": (-2, 2),
                   "seed": (0, 2**63 - 1)}


def _read_sampling_file(path: str) -> dict[str, dict]:
    """CONFAB_SAMPLING_FILE, checked: unknown fields and values out of range are reported."""
    try:
        table = json.loads(Path(path).expanduser().read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"CONFAB_SAMPLING_FILE {path} cannot be read as JSON: {e}") from None
    if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
        raise ConfigError("CONFAB_SAMPLING_FILE must be a JSON object of model name -> settings.")
    for model, fields in table.items():
        for key, value in fields.items():
            if key not in SAMPLING_RANGES:
                raise ConfigError(f"CONFAB_SAMPLING_FILE: '{key}' (for {model}) is not one of "
                                  f"{', '.join(SAMPLING_RANGES)}.")
            low, high = SAMPLING_RANGES[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                raise ConfigError(f"CONFAB_SAMPLING_FILE: {key} for {model} must be a number from "
                                  f"{low} to {high}, not {value!r}.")
    return table


def _coerce(f: dataclasses.Field, raw, name: str):
    if not isinstance(raw, str):
        return tuple(raw) if f.type.startswith("tuple") and not isinstance(raw, tuple) else raw
    text = raw.strip()
    try:
        if f.type == "int":
            return int(text)
        if f.type == "float":
            return float(text)
        if f.type == "bool":
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if f.type.startswith("tuple"):
            return tuple(p.strip() for p in text.split(",") if p.strip())
        return raw
    except ValueError:
        raise ConfigError(f"{name} must be a {f.type}, not '{raw}'.") from None
