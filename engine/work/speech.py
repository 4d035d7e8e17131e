"""Speech as engine work: transcription and speech jobs, their loaders and executors.

Uploaded audio is decoded at intake (so a bad file is refused before it is queued) and kept
as a 16 kHz mono WAV under `DATA_DIR/uploads/JOBID.wav`, the job holding its path. A file
rather than base64 in the job record: the store keeps every queued job's payload as JSON and
reads all of them back at start-up, and a 10-minute clip would add 25 MB to each of those rows;
the file is removed when the job ends. Only when jobs go to workers on other hosts (the Redis
queue, CONFAB_QUEUE_URL) does the WAV travel inside the job, base64-encoded, since a worker
cannot read the front host's disk.

Text-to-speech has two engines behind one job type: Piper (the fast voice, the offline default)
and Bark. `pick_tts` falls back to the fast voice when Bark is not installed or its expected
wait is over `bark_wait_budget_s`, and the note it returns goes into the reply.
"""
from __future__ import annotations

import asyncio
import base64
import importlib.util
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from engine.config import Settings
from engine.errors import BackendMissing, BadMedia, BadRequest, JobCancelled, LimitExceeded, UnknownModel
from engine.jobs import Job, Origin, Progress, register_job_type
from engine.media import audio
from engine.media.sentences import split_sentences
from engine.priority import priority_class
from engine.work.registry import RunContext, cpu_threads, register_executor, register_loader
from models.bark_tts import PRESETS, BarkTTS
from models.catalog import BY_NAME
from models.piper_tts import PiperTTS, speakers_in, voice_name
from models.registry import InstalledModel
from models.whisper_stt import SttOptions, WhisperSTT, compute_type_for, language_codes

log = logging.getLogger(__name__)

# OpenAI's voice names, mapped in this order onto a model's voices (Bark's v2/en_speaker_N).
OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage",
                 "shimmer", "verse", "marin", "cedar")
# OpenAI's model names, mapped onto installed models.
OPENAI_STT_MODELS = ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe",
                     "gpt-4o-mini-transcribe-2025-12-15")
OPENAI_TTS_FAST = ("tts-1",)
OPENAI_TTS_HD = ("tts-1-hd", "gpt-4o-mini-tts", "gpt-4o-mini-tts-2025-12-15")
SENTENCE_PAUSE_S = 0.2


# -- jobs, events, results -------------------------------------------------------------------

@register_job_type
@dataclass
class TranscribeJob(Job):
    kind: ClassVar[str] = "transcribe"
    audio_path: str = ""              # a 16 kHz mono WAV written at intake
    task: str = "transcribe"          # or translate (into English)
    language: str | None = None
    prompt: str = ""
    temperature: float = 0.0
    word_timestamps: bool = False
    vad_filter: bool | None = None    # None: the setting CONFAB_STT_VAD
    delete_audio: bool = True         # remove audio_path when the job ends
    audio_b64: str = ""               # the WAV itself, when workers on other hosts run the job


@register_job_type
@dataclass
class SpeakJob(Job):
    kind: ClassVar[str] = "speak"
    text: str = ""
    voice: str = ""
    speed: float = 1.0
    response_format: str = "wav"
    note: str = ""                    # why another voice than the one asked for answers


@dataclass(frozen=True)
class TranscriptSegment:
    """Streamed while transcribing: one recognised segment."""
    start: float
    end: float
    text: str


@dataclass(frozen=True)
class SpeechChunk:
    """Streamed while speaking: one sentence's audio (16-bit mono PCM)."""
    index: int
    text: str
    pcm: bytes
    sample_rate: int


@dataclass
class Word:
    start: float
    end: float
    word: str
    probability: float = 0.0


@dataclass
class Segment:
    id: int
    start: float
    end: float
    text: str
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    compression_ratio: float = 0.0
    temperature: float = 0.0
    tokens: list[int] = field(default_factory=list)
    words: list[Word] = field(default_factory=list)
    seek: int = 0                     # Whisper's offset in the audio, in 10 ms frames


@dataclass
class TranscriptResult:
    text: str
    language: str
    duration_s: float
    segments: list[Segment]
    model: str
    task: str = "transcribe"


@dataclass
class SpeechResult:
    audio: bytes
    format: str
    sample_rate: int
    duration_s: float
    model: str
    voice: str
    sentences: int
    note: str = ""
    waveform: bytes = b""      # its loudness as a voice message shows it (audio.waveform)

    @property
    def mime_type(self) -> str:
        return audio.mime_type(self.format)


# -- loaders -----------------------------------------------------------------------------------

@register_loader("ct2-whisper", library="ctranslate2")
def load_whisper(model: InstalledModel, device: str, settings: Settings):
    if importlib.util.find_spec("faster_whisper") is None:
        raise BackendMissing("faster-whisper", "speech")
    # int8 on the CPU, float16 on CUDA: the device comes from the memory manager.
    stt = WhisperSTT(model.path, device=device, threads=cpu_threads(settings),
                     compute_type=compute_type_for(device))
    stt.beam_size = int(model.options.get("beam_size", 0)) or None
    return stt


@register_loader("piper", library="onnxruntime")
def load_piper(model: InstalledModel, device: str, settings: Settings):
    if importlib.util.find_spec("piper") is None:
        raise BackendMissing("piper-tts", "speech")
    return PiperTTS(model.path, device=device)


@register_loader("bark", library="torch")
def load_bark(model: InstalledModel, device: str, settings: Settings):
    if not bark_available():
        raise BackendMissing("transformers and torch", "bark")
    return BarkTTS(model.path, device=device, threads=settings.threads)


def bark_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("transformers", "torch"))


# -- executors -------------------------------------------------------------------------------

@register_executor("transcribe", "stt")
def run_transcribe(stt, job: TranscribeJob, ctx: RunContext) -> TranscriptResult:
    try:
        if job.task not in ("transcribe", "translate"):
            raise BadRequest("The task must be transcribe or translate.", param="task")
        if not stt.multilingual:
            if job.task == "translate":
                raise BadRequest(f"The model '{job.model}' knows English only and cannot translate; "
                                 "use a multilingual model such as whisper-base.", param="model")
            if job.language and job.language != "en":
                raise BadRequest(f"The model '{job.model}' knows English only; it cannot transcribe "
                                 f"'{job.language}'.", param="language")
        if job.audio_b64:
            pcm = audio.read_wav_bytes(base64.b64decode(job.audio_b64))
        else:
            pcm = audio.read_wav(job.audio_path)
        vad = ctx.settings.stt_vad if job.vad_filter is None else job.vad_filter
        beam = int(getattr(stt, "beam_size", 0) or ctx.settings.stt_beam_size)
        options = SttOptions(task=job.task, language=job.language or None,
                             initial_prompt=job.prompt or None, temperature=job.temperature,
                             beam_size=beam, vad_filter=vad, word_timestamps=job.word_timestamps)
        pieces, info = stt.transcribe(audio.to_float(pcm), options)
        segments: list[Segment] = []
        for s in pieces:          # decoding happens here, one segment at a time
            if ctx.cancelled():
                raise JobCancelled()
            # numbered from 0 as OpenAI numbers them (faster-whisper counts from 1)
            segments.append(Segment(len(segments), s.start, s.end, s.text.strip(), s.avg_logprob,
                                    s.no_speech_prob, s.compression_ratio, s.temperature, s.tokens,
                                    [Word(w.start, w.end, w.word, w.probability) for w in s.words],
                                    s.seek))
            ctx.emit(TranscriptSegment(s.start, s.end, s.text.strip()))
            if info.duration:
                ctx.emit(Progress(int(min(s.end, info.duration) * 1000), int(info.duration * 1000)))
        text = " ".join(s.text for s in segments if s.text).strip()
        return TranscriptResult(text, info.language, round(info.duration, 3), segments, job.model, job.task)
    finally:
        if job.delete_audio:
            discard(job.audio_path)


@register_executor("speak", "tts")
def run_speak(tts, job: SpeakJob, ctx: RunContext) -> SpeechResult:
    fmt = audio.check_format(job.response_format)
    max_chars = 220 if getattr(tts, "engine", "") == "bark" else 400
    sentences = split_sentences(job.text, max_chars=max_chars)
    if not sentences:
        raise BadRequest("There is nothing to say: the text holds no words.", param="input")
    rate = tts.sample_rate
    pause = audio.silence(SENTENCE_PAUSE_S, rate)
    total = audio.Pcm(b"", rate)
    for i, sentence in enumerate(sentences):
        if ctx.cancelled():
            raise JobCancelled()
        kwargs = {"cancelled": ctx.cancelled} if getattr(tts, "engine", "") == "bark" else {}
        data = tts.synthesize(sentence, voice=job.voice or None, **kwargs)
        if ctx.cancelled():
            raise JobCancelled()
        ctx.emit(SpeechChunk(i, sentence, data, rate))
        ctx.emit(Progress(i + 1, len(sentences)))
        total = total + (pause if i else audio.Pcm(b"", rate)) + audio.Pcm(data, rate)
    # the tempo is changed by ffmpeg for every voice: Piper's own length_scale is not
    # proportional (its phoneme durations are rounded up), so speed 2 came out only 1.6x faster
    encoded = audio.encode(total, fmt, speed=job.speed)
    # at the tempo it is played at: the rate the samples pass by per second
    wave = audio.waveform(total.data, max(1, round(rate * job.speed)))
    return SpeechResult(encoded, fmt, rate, round(total.duration_s / job.speed, 3),
                        job.model, job.voice, len(sentences), job.note, wave)


def discard(path: str) -> None:
    if path:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("could not remove %s: %s", path, e)


# -- submitting --------------------------------------------------------------------------------

def uploads_dir(settings: Settings) -> Path:
    return settings.data_path / "uploads"


async def intake(data: bytes, settings: Settings) -> audio.Pcm:
    """Decode an upload to 16 kHz mono in a worker thread; raises BadMedia / LimitExceeded."""
    return await asyncio.to_thread(audio.decode, data, settings.max_audio_bytes,
                                   settings.max_audio_seconds, settings.ffmpeg_timeout_s,
                                   audio.STT_RATE, False, uploads_dir(settings))


def stt_model_name(engine, requested: str | None) -> str | None:
    """OpenAI's names (whisper-1, gpt-4o-transcribe) mean the default speech-to-text model."""
    if not requested or requested in OPENAI_STT_MODELS:
        return None
    return requested


async def submit_transcription(engine, data: bytes | audio.Pcm, origin: Origin, *,
                               model: str | None = None, task: str = "transcribe",
                               language: str | None = None, prompt: str = "",
                               temperature: float = 0.0, word_timestamps: bool = False,
                               priority: int | None = None, meta: dict | None = None):
    """Check and decode the audio, keep it for the job, and queue the job; returns its handle.
    `meta`: the caller's notes, kept with the job (see `Job.meta`)."""
    settings: Settings = engine.settings
    if language is not None:
        language = check_language(language)
    if len(prompt) > 2000:
        raise LimitExceeded("The prompt", len(prompt), 2000, "characters", param="prompt")
    pcm = data if isinstance(data, audio.Pcm) else await intake(data, settings)
    if pcm.rate != audio.STT_RATE:
        raise BadMedia("Internal audio must be 16 kHz.")
    if pcm.duration_s > settings.max_audio_seconds:
        raise LimitExceeded("The audio", f"{pcm.duration_s:.0f}", f"{settings.max_audio_seconds:g}", "seconds",
                            param="file")
    job = TranscribeJob(model=stt_model_name(engine, model) or "", origin=origin, priority=priority,
                        task=task, language=language, prompt=prompt, temperature=temperature,
                        word_timestamps=word_timestamps, meta=dict(meta or {}))
    if getattr(settings, "queue_url", ""):
        job.audio_b64 = base64.b64encode(audio.wav_bytes(pcm)).decode("ascii")
        return await engine.submit(job)
    job.audio_path = str(uploads_dir(settings) / f"{job.id}.wav")
    await asyncio.to_thread(audio.write_wav, job.audio_path, pcm)
    try:
        handle = await engine.submit(job)
    except BaseException:
        discard(job.audio_path)
        raise
    # A job cancelled while queued never reaches its executor, which removes the file otherwise.
    handle._result.add_done_callback(lambda _f, p=job.audio_path: discard(p))
    return handle


# Whisper's languages in words (verbose_json and Wyoming name them), as Whisper's own table does (all 100 it knows)
LANGUAGE_NAMES = {
    "en": "english", "zh": "chinese", "de": "german", "es": "spanish", "ru": "russian",
    "ko": "korean", "fr": "french", "ja": "japanese", "pt": "portuguese", "tr": "turkish",
    "pl": "polish", "ca": "catalan", "nl": "dutch", "ar": "arabic", "sv": "swedish",
    "it": "italian", "id": "indonesian", "hi": "hindi", "fi": "finnish", "vi": "vietnamese",
    "he": "hebrew", "uk": "ukrainian", "el": "greek", "ms": "malay", "cs": "czech",
    "ro": "romanian", "da": "danish", "hu": "hungarian", "ta": "tamil", "no": "norwegian",
    "th": "thai", "ur": "urdu", "hr": "croatian", "bg": "bulgarian", "lt": "lithuanian",
    "la": "latin", "mi": "maori", "ml": "malayalam", "cy": "welsh", "sk": "slovak", "te": "telugu",
    "fa": "persian", "lv": "latvian", "bn": "bengali", "sr": "serbian", "az": "azerbaijani",
    "sl": "slovenian", "kn": "kannada", "et": "estonian", "mk": "macedonian", "br": "breton",
    "eu": "basque", "is": "icelandic", "hy": "armenian", "ne": "nepali", "mn": "mongolian",
    "bs": "bosnian", "kk": "kazakh", "sq": "albanian", "sw": "swahili", "gl": "galician",
    "mr": "marathi", "pa": "punjabi", "si": "sinhala", "km": "khmer", "sn": "shona",
    "yo": "yoruba", "so": "somali", "af": "afrikaans", "oc": "occitan", "ka": "georgian",
    "be": "belarusian", "tg": "tajik", "sd": "sindhi", "gu": "gujarati", "am": "amharic",
    "yi": "yiddish", "lo": "lao", "uz": "uzbek", "fo": "faroese", "ht": "haitian creole",
    "ps": "pashto", "tk": "turkmen", "nn": "nynorsk", "mt": "maltese", "sa": "sanskrit",
    "lb": "luxembourgish", "my": "myanmar", "bo": "tibetan", "tl": "tagalog", "mg": "malagasy",
    "as": "assamese", "tt": "tatar", "haw": "hawaiian", "ln": "lingala", "ha": "hausa",
    "ba": "bashkir", "jw": "javanese", "su": "sundanese", "yue": "cantonese",
}


def check_language(language: str) -> str:
    code = language.strip().lower()
    if not code:
        return ""
    try:
        codes = language_codes()
    except ImportError:
        codes = None
    if codes is not None and code not in codes:
        raise BadRequest(f"'{language}' is not a language Whisper knows; use an ISO-639-1 code "
                         "such as en, de or fr.", param="language")
    return code


def _is_bark(engine, name: str) -> bool:
    model = next((m for m in engine.installed() if m.name == name), None)
    if model is not None:
        return model.fmt == "bark"
    entry = BY_NAME.get(name)
    return entry is not None and entry.fmt == "bark"


def fast_voice(engine) -> str:
    """The Piper voice to answer with when Bark cannot."""
    settings: Settings = engine.settings
    if settings.fast_tts_model:
        return engine.resolve_model(settings.fast_tts_model, "tts").name
    piper = [m for m in engine.installed("tts") if m.fmt == "piper"]
    if not piper:
        raise UnknownModel("(the fast voice)", "tts", [m.name for m in engine.installed("tts")])
    piper.sort(key=lambda m: (not (BY_NAME.get(m.name) and BY_NAME[m.name].default), m.name))
    return piper[0].name


def expected_wait_s(engine, model: str, priority: int) -> float:
    """Seconds before a new job for `model` at `priority` would likely start: the work queued
    ahead of it and running now, plus loading the model when it is not resident and a load time
    was measured before."""
    sched = engine.dispatcher
    ahead = [e for e in sched.waiting if e.cls <= priority]
    wait = sum(sched.service_estimate(e.model) for e in ahead)
    wait += sum(sched.service_estimate(e.model) for e in sched.running)
    wait /= max(1, sched.concurrency)
    if model not in sched.resident_names():
        wait += sched.load_seconds.get(model, 0.0)
    return wait


def pick_tts(engine, requested: str | None, priority: int) -> tuple[str, str]:
    """(model to speak with, note for the reply). Bark falls back to the fast voice when it is
    not installed, cannot load here, or would wait longer than the budget."""
    settings: Settings = engine.settings
    if requested in OPENAI_TTS_FAST:
        return fast_voice(engine), ""
    if requested in OPENAI_TTS_HD:
        bark = [m.name for m in engine.installed("tts") if m.fmt == "bark"]
        requested = bark[0] if bark else "bark"
    name = requested or engine.resolve_model(None, "tts").name
    if not _is_bark(engine, name):
        return engine.resolve_model(name, "tts").name, ""
    installed = {m.name for m in engine.installed("tts")}
    if name not in installed:
        return fast_voice(engine), (f"Bark ('{name}') is not installed here, so the fast voice "
                                    f"answered. An admin can add it with `confab models pull {name}`.")
    if not bark_available():
        return fast_voice(engine), ("Bark needs transformers and torch, which are not installed "
                                    "here, so the fast voice answered (pip install 'confab-bot[bark]').")
    wait = expected_wait_s(engine, name, priority)
    if wait > settings.bark_wait_budget_s:
        return fast_voice(engine), (f"Bark would start in about {wait:.0f} s, over the "
                                    f"{settings.bark_wait_budget_s:g} s budget, so the fast voice answered.")
    return name, ""


def map_voice(voice: str | None, model: InstalledModel | None, strict: bool = True) -> str:
    """OpenAI's voice names onto the model's voices; Bark presets and Piper speakers pass through.
    Any other name is refused, unless `strict` is off (the voice was asked of another model,
    which the fast voice stands in for): then the model's own voice answers."""
    if not voice:
        return ""
    v = voice.strip()
    if v.lower() in OPENAI_VOICES:
        i = OPENAI_VOICES.index(v.lower())
        if model is not None and model.fmt == "bark":
            return f"v2/en_speaker_{i % 10}"
        return ""          # Piper voices here have one speaker; the model's own voice answers
    if model is not None and model.fmt == "bark":
        if v in PRESETS or not strict:
            return v if v in PRESETS else ""
        raise BadRequest(f"'{voice}' is not a Bark voice; use one of OpenAI's names (alloy, "
                         "echo, ...) or a preset such as v2/en_speaker_6.", param="voice")
    if model is not None and model.fmt == "piper":
        speakers = speakers_in(model.path)
        if v in speakers:
            return v
        if v in (model.name, voice_name(model.path)) or not strict:
            return ""
        theirs = f", or one of its speakers: {', '.join(speakers)}" if speakers else ""
        raise BadRequest(f"'{voice}' is not a voice of {model.name}; use one of OpenAI's voice "
                         f"names ({', '.join(OPENAI_VOICES)}){theirs}.", param="voice")
    return v


async def submit_speech(engine, text: str, origin: Origin, *, model: str | None = None,
                        voice: str | None = None, response_format: str = "wav", speed: float = 1.0,
                        priority: int | None = None, check_length: bool = True, meta: dict | None = None):
    """Choose the voice (with Bark's fallback), check the limits, queue the job; returns its handle."""
    settings: Settings = engine.settings
    if not text or not text.strip():
        raise BadRequest("There is nothing to say: the text is empty.", param="input")
    if check_length and len(text) > settings.max_speech_chars:
        raise LimitExceeded("The text to speak", len(text), settings.max_speech_chars, "characters",
                            param="input")
    if not 0.25 <= speed <= 4.0:
        raise BadRequest(f"'speed' must be between 0.25 and 4; got {speed:g}.", param="speed")
    fmt = audio.check_format(response_format)
    prio = priority if priority is not None else priority_class(origin, settings.admins)
    name, note = pick_tts(engine, model, prio)
    installed = next((m for m in engine.installed("tts") if m.name == name), None)
    job = SpeakJob(model=name, origin=origin, priority=priority, text=text,
                   voice=map_voice(voice, installed, strict=not note), speed=speed,
                   response_format=fmt, note=note, meta=dict(meta or {}))
    return await engine.submit(job)
