"""Audio in and out: intake through ffmpeg to 16 kHz mono, and encoding to the formats people ask for.

Intake takes whatever a person uploaded (a Discord ogg/opus voice message, a Slack webm or
mp4 clip, mp3, wav, flac), decodes it with ffmpeg under a timeout and within the size and
duration limits, and refuses what cannot be used with a `BadMedia` or `LimitExceeded` that
says why: empty, not audio, corrupt, silent, too big, too long. ffmpeg only ever reads the one
uploaded file (a whitelist of demuxers and the `file` protocol), so a playlist disguised as
audio cannot make it open other files or URLs.

Audio inside Confab is `Pcm`: signed 16-bit little-endian mono samples and their rate.
"""
from __future__ import annotations

import io
import logging
import math
import os
import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

from engine.errors import BackendMissing, BadMedia, BadRequest, LimitExceeded

log = logging.getLogger(__name__)

STT_RATE = 16_000

# Demuxers ffmpeg may use on an upload: ogg (opus, vorbis), matroska/webm, mp4/m4a/mov, mp3,
# wav, flac, raw aac. Nothing that can refer to another file or a URL (hls, concat, ...).
DEMUXERS = "ogg,matroska,webm,mov,mp4,m4a,3gp,mp3,wav,flac,aac,caf,aiff"

# A clip whose loudest sample stays under this (about -54 dBFS) holds no speech.
SILENCE_PEAK = 64
SILENCE_RMS = 12.0

# Output formats: (pydub/ffmpeg container, codec, sample rate or None to keep, MIME type).
FORMATS: dict[str, tuple[str, str | None, int | None, str]] = {
    "wav": ("wav", None, None, "audio/wav"),
    "mp3": ("mp3", "libmp3lame", None, "audio/mpeg"),
    "opus": ("ogg", "libopus", 48_000, "audio/ogg"),
    "ogg": ("ogg", "libopus", 48_000, "audio/ogg"),
    "flac": ("flac", "flac", None, "audio/flac"),
    "aac": ("adts", "aac", None, "audio/aac"),
    "pcm": ("s16le", None, 24_000, "audio/pcm"),   # OpenAI's pcm: raw 24 kHz 16-bit LE mono
}
EXTENSIONS = {"wav": "wav", "mp3": "mp3", "opus": "ogg", "ogg": "ogg", "flac": "flac",
              "aac": "aac", "pcm": "pcm"}


@dataclass(frozen=True)
class Pcm:
    """Signed 16-bit little-endian mono samples."""
    data: bytes
    rate: int

    @property
    def samples(self) -> int:
        return len(self.data) // 2

    @property
    def duration_s(self) -> float:
        return self.samples / self.rate if self.rate else 0.0

    def __add__(self, other: "Pcm") -> "Pcm":
        if not self.data:
            return other
        if other.rate != self.rate:
            raise ValueError("cannot join audio of different sample rates")
        return Pcm(self.data + other.data, self.rate)


def ffmpeg_path() -> str:
    path = shutil.which("ffmpeg")
    if not path:
        raise BackendMissing("ffmpeg (the Debian package: apt-get install ffmpeg)", "speech")
    return path


def _numpy():
    try:
        import numpy
    except ImportError:
        raise BackendMissing("numpy", "speech") from None
    return numpy


# -- intake -----------------------------------------------------------------------------------

def check_size(size: int, max_bytes: int) -> None:
    if size <= 0:
        raise BadMedia("The audio file is empty.", reason="empty")
    if size > max_bytes:
        raise LimitExceeded("The audio file", f"{size / 2**20:.1f}", f"{max_bytes / 2**20:.1f}",
                            "MB", status=413)


def decode(data: bytes, max_bytes: int, max_seconds: float, timeout_s: float,
           rate: int = STT_RATE, allow_silence: bool = False, workdir: str | Path | None = None) -> Pcm:
    """Any supported upload to mono `rate` Hz Pcm, or a clear error. Blocking: run it in a thread."""
    check_size(len(data), max_bytes)
    ffmpeg = ffmpeg_path()
    if workdir:
        Path(workdir).mkdir(parents=True, exist_ok=True)
    # A file, not a pipe: mp4/m4a keep their index at the end and need a seekable input.
    fd, src = tempfile.mkstemp(prefix="confab-in-", dir=workdir)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        cmd = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error",
               "-protocol_whitelist", "file", "-format_whitelist", DEMUXERS,
               "-i", src, "-vn", "-sn", "-dn", "-t", f"{max_seconds + 1:.3f}",
               "-ac", "1", "-ar", str(rate), "-f", "s16le", "-acodec", "pcm_s16le", "pipe:1"]
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise BadMedia(f"Decoding the audio took longer than {timeout_s:g} s and was stopped; "
                           "the file may be damaged.", reason="timeout") from None
    finally:
        try:
            os.unlink(src)
        except OSError:
            pass
    err = proc.stderr.decode("utf-8", "replace").strip()
    out = proc.stdout[: len(proc.stdout) - len(proc.stdout) % 2]
    if proc.returncode != 0 and not out:
        raise BadMedia(_why_not(err), reason="not_audio" if _not_audio(err) else "corrupt")
    if not out:
        raise BadMedia("The file holds no audio.", reason="no_audio")
    if proc.returncode != 0 or err:
        log.info("ffmpeg decoded %d bytes with complaints: %s", len(out), err[:300])
    pcm = Pcm(out, rate)
    if pcm.duration_s > max_seconds:
        raise LimitExceeded("The audio", f"longer than {max_seconds:g}", f"{max_seconds:g}", "seconds")
    if pcm.duration_s < 0.1:
        raise BadMedia("The audio is too short to hold speech (under 0.1 s).", reason="too_short")
    if not allow_silence and is_silent(pcm):
        raise BadMedia("The audio is silent: I could not hear anything in it.", reason="silent")
    return pcm


def _not_audio(err: str) -> bool:
    e = err.lower()
    return ("invalid data found" in e or "does not contain any stream" in e
            or "format not on whitelist" in e or "not on whitelist" in e
            or "matches no streams" in e or "could not find codec" in e or "unknown format" in e)


def _why_not(err: str) -> str:
    if _not_audio(err):
        return ("That file is not audio Confab can read. Send ogg/opus, webm, mp4/m4a, mp3, "
                "wav or flac.")
    return "The audio file is damaged and could not be decoded."


def levels(pcm: Pcm) -> tuple[int, float]:
    """(peak, rms) of the samples, on the 16-bit scale."""
    if not pcm.data:
        return 0, 0.0
    np = _numpy()
    x = np.frombuffer(pcm.data, dtype="<i2").astype(np.float32)
    return int(np.max(np.abs(x))), float(math.sqrt(float(np.mean(x * x))))


WAVEFORM_POINTS = 256      # what a voice message's waveform holds at most (Discord's clients)
WAVEFORM_PER_SECOND = 10


def waveform(samples: bytes, rate: int, max_points: int = WAVEFORM_POINTS) -> bytes:
    """The loudness of 16-bit mono PCM as a voice message shows it: one byte (0-255, RMS scaled
    to the loudest point) per tenth of a second, at most `max_points` bytes."""
    np = _numpy()
    x = np.frombuffer(samples[: len(samples) - len(samples) % 2], dtype="<i2").astype(np.float32)
    if not len(x):
        return bytes(1)
    points = max(1, min(max_points, math.ceil(len(x) / rate * WAVEFORM_PER_SECOND)))
    rms = np.array([math.sqrt(float(np.mean(c * c))) if len(c) else 0.0 for c in np.array_split(x, points)])
    top = float(rms.max()) or 1.0
    return bytes(int(round(255 * v / top)) for v in rms)


def is_silent(pcm: Pcm) -> bool:
    peak, rms = levels(pcm)
    return peak < SILENCE_PEAK or rms < SILENCE_RMS


def to_float(pcm: Pcm):
    """float32 samples in [-1, 1] (what Whisper takes)."""
    np = _numpy()
    return np.frombuffer(pcm.data, dtype="<i2").astype(np.float32) / 32768.0


def from_float(samples, rate: int) -> Pcm:
    np = _numpy()
    x = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    return Pcm((x * 32767.0).astype("<i2").tobytes(), rate)


# -- WAV files (uploads kept for queued jobs, and headless voice) ------------------------------

def write_wav(path: str | Path, pcm: Pcm) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(pcm.rate)
        w.writeframes(pcm.data)
    os.replace(tmp, path)


def wav_bytes(pcm: Pcm) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(pcm.rate)
        w.writeframes(pcm.data)
    return buf.getvalue()


def read_wav(path: str | Path) -> Pcm:
    """A mono 16-bit WAV as Pcm (Confab's own files; uploads go through `decode`)."""
    source = path if isinstance(path, io.BytesIO) else str(path)
    with wave.open(source, "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise BadMedia("That WAV file is not 16-bit mono.")
        return Pcm(w.readframes(w.getnframes()), w.getframerate())


def read_wav_bytes(data: bytes) -> Pcm:
    return read_wav(io.BytesIO(data))


# -- encoding ---------------------------------------------------------------------------------

def check_format(fmt: str) -> str:
    fmt = (fmt or "mp3").lower()
    if fmt not in FORMATS:
        raise BadRequest(f"response_format must be one of {', '.join(FORMATS)}; got '{fmt}'.",
                         param="response_format")
    return fmt


def mime_type(fmt: str) -> str:
    return FORMATS[check_format(fmt)][3]


# Formats whose pieces, encoded one after another, join into one file: speech streams in these.
STREAMED_FORMATS = ("pcm", "wav", "mp3", "aac")


def encode_piece(pcm: Pcm, fmt: str, speed: float = 1.0, first: bool = True) -> bytes:
    """One piece of a stream in `fmt` (see STREAMED_FORMATS). A WAV stream is 24 kHz PCM after a
    header whose lengths say "unknown" (0xFFFFFFFF), as streamed WAV has it. Blocking."""
    if fmt == "wav":
        body = encode(pcm, "pcm", speed)
        return wav_stream_header(FORMATS["pcm"][2]) + body if first else body
    return encode(pcm, fmt, speed, bare=not first)


def wav_stream_header(rate: int) -> bytes:
    unknown = 0xFFFFFFFF
    return (b"RIFF" + unknown.to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little")
            + (1).to_bytes(2, "little") + (1).to_bytes(2, "little") + rate.to_bytes(4, "little")
            + (rate * 2).to_bytes(4, "little") + (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
            + b"data" + unknown.to_bytes(4, "little"))


def encode(pcm: Pcm, fmt: str, speed: float = 1.0, bare: bool = False) -> bytes:
    """Pcm to the bytes of an audio file in `fmt` (wav, mp3, opus, ogg, flac, aac, pcm), through
    pydub and ffmpeg. `speed` other than 1 changes the tempo, not the pitch. `bare`: a later
    piece of a stream. Blocking."""
    fmt = check_format(fmt)
    container, codec, rate, _ = FORMATS[fmt]
    if fmt == "wav" and speed == 1.0:
        return wav_bytes(pcm)
    try:
        from pydub import AudioSegment
    except ImportError:
        raise BackendMissing("pydub", "speech") from None
    ffmpeg_path()
    seg = AudioSegment(data=pcm.data, sample_width=2, frame_rate=pcm.rate, channels=1)
    params: list[str] = []
    if speed != 1.0:
        params += ["-filter:a", _atempo(speed)]
    if rate and rate != pcm.rate:
        params += ["-ar", str(rate)]
    if fmt == "mp3":
        params += ["-b:a", "64k"]
        if bare:      # a later piece of a stream: frames only, no tags or header of its own
            params += ["-id3v2_version", "0", "-write_xing", "0"]
    elif fmt in ("opus", "ogg"):
        params += ["-b:a", "32k", "-application", "voip"]
    buf = io.BytesIO()
    seg.export(buf, format=container, codec=codec, parameters=params or None)
    return buf.getvalue()


def _atempo(speed: float) -> str:
    """ffmpeg's atempo takes 0.5-2.0 per stage; chain stages for 0.25-4.0."""
    stages, s = [], speed
    while s > 2.0:
        stages.append(2.0)
        s /= 2.0
    while s < 0.5:
        stages.append(0.5)
        s /= 0.5
    stages.append(s)
    return ",".join(f"atempo={x:.4f}" for x in stages)


def silence(seconds: float, rate: int) -> Pcm:
    return Pcm(b"\x00\x00" * int(seconds * rate), rate)


def resample(pcm: Pcm, rate: int) -> Pcm:
    """Linear interpolation to `rate`: good enough for speech between 8, 16, 22.05 and 24 kHz,
    and fast enough to run on every streamed chunk (ffmpeg costs a process each time)."""
    if pcm.rate == rate or not pcm.data:
        return Pcm(pcm.data, rate) if not pcm.data else pcm
    np = _numpy()
    x = np.frombuffer(pcm.data, dtype="<i2").astype(np.float32)
    n = max(1, int(round(len(x) * rate / pcm.rate)))
    y = np.interp(np.arange(n) * (pcm.rate / rate), np.arange(len(x)), x)
    return Pcm(np.clip(np.round(y), -32768, 32767).astype("<i2").tobytes(), rate)


# -- G.711 (8 kHz mu-law and A-law: telephone audio, as OpenAI's Realtime API takes it) -------

G711_RATE = 8000


def _g711_tables():
    np = _numpy()
    codes = np.arange(256, dtype=np.int32)
    u = ~codes & 0xFF
    mag = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    ulaw = np.where(u & 0x80, 0x84 - mag, mag - 0x84)
    a = codes ^ 0x55
    seg = (a & 0x70) >> 4
    val = ((a & 0x0F) << 4) + 8
    val = np.where(seg == 0, val, (val + 0x100) << np.maximum(seg - 1, 0))
    alaw = np.where(a & 0x80, val, -val)
    return ulaw.astype(np.int16), alaw.astype(np.int16)


def g711_decode(data: bytes, law: str) -> Pcm:
    """mu-law ('pcmu') or A-law ('pcma') bytes to 8 kHz Pcm."""
    np = _numpy()
    table = _g711_tables()[0 if law == "pcmu" else 1]
    return Pcm(table[np.frombuffer(data, dtype=np.uint8)].astype("<i2").tobytes(), G711_RATE)


def g711_encode(pcm: Pcm, law: str) -> bytes:
    """Pcm (any rate) to 8 kHz mu-law or A-law: each sample takes the nearest code."""
    np = _numpy()
    table = _g711_tables()[0 if law == "pcmu" else 1].astype(np.int32)
    order = np.argsort(table)
    ranked = table[order]
    x = np.frombuffer(resample(pcm, G711_RATE).data, dtype="<i2").astype(np.int32)
    i = np.clip(np.searchsorted(ranked, x), 1, 255)
    nearer = np.where(np.abs(ranked[i - 1] - x) <= np.abs(ranked[i] - x), i - 1, i)
    return order[nearer].astype(np.uint8).tobytes()
