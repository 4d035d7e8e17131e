"""Audio intake and encoding through ffmpeg: every format people send, every bad input refused
with its own error (never a crash, never a hang), every format Confab answers in."""
from __future__ import annotations

import audioop

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from engine.errors import BadMedia, BadRequest, LimitExceeded
from engine.media import audio
from engine.media.sentences import SentenceBuffer, split_sentences
from tests.speech_helpers import convert, espeak, probe_seconds, requires_speech_tools

pytestmark = requires_speech_tools

MB = 2**20


def decode(data: bytes, max_bytes=25 * MB, max_seconds=600.0, timeout=30.0, **kw):
    return audio.decode(data, max_bytes, max_seconds, timeout, **kw)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    return espeak("Please send the quarterly report to the whole team by Friday.", folder / "clip.wav")


# Slack clips are webm or mp4; Discord voice messages are ogg/opus.
FORMATS = {
    "ogg": ("-c:a", "libopus"),
    "webm": ("-c:a", "libopus"),
    "m4a": ("-c:a", "aac"),
    "mp4": ("-c:a", "aac"),
    "mp3": (),
    "flac": (),
    "wav": (),
}


@pytest.mark.parametrize("ext", FORMATS)
def test_every_format_people_send_decodes_to_16k_mono(clip, tmp_path, ext):
    src = convert(clip, tmp_path / f"clip.{ext}", *FORMATS[ext])
    pcm = decode(src.read_bytes())
    assert pcm.rate == 16_000
    expected = probe_seconds(clip.read_bytes())
    assert abs(pcm.duration_s - expected) < 0.1
    peak, rms = audio.levels(pcm)
    assert peak > 5000 and rms > 500


def test_empty_file():
    with pytest.raises(BadMedia, match="empty") as e:
        decode(b"")
    assert e.value.data["reason"] == "empty"


@pytest.mark.parametrize("data", [b"this is a text file, not audio\n" * 50,
                                  b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8,
                                  bytes(4096)])
def test_not_audio(data):
    with pytest.raises(BadMedia) as e:
        decode(data)
    assert e.value.data["reason"] == "not_audio" and "not audio" in e.value.message


def test_corrupt_audio(clip, tmp_path):
    ogg = convert(clip, tmp_path / "clip.ogg", "-c:a", "libopus").read_bytes()
    broken = ogg[:60] + bytes((b * 7 + 3) % 256 for b in ogg[60:4000])
    with pytest.raises(BadMedia) as e:
        decode(broken)
    # an ogg whose pages past the header are scrambled: damaged, said so (not "not audio", not
    # "silent": any of the five reasons passed before, so the check could not fail)
    assert e.value.data["reason"] == "corrupt" and "damaged" in e.value.message


def test_silent_audio(tmp_path):
    import subprocess
    path = tmp_path / "silence.wav"
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-f", "lavfi", "-i",
                    "anullsrc=r=16000:cl=mono", "-t", "3", str(path)], check=True, timeout=30)
    with pytest.raises(BadMedia, match="silent") as e:
        decode(path.read_bytes())
    assert e.value.data["reason"] == "silent"
    assert decode(path.read_bytes(), allow_silence=True).duration_s == pytest.approx(3, abs=0.05)


def test_too_long(clip):
    with pytest.raises(LimitExceeded) as e:
        decode(clip.read_bytes(), max_seconds=1.5)
    assert "1.5" in e.value.message and "seconds" in e.value.message


def test_too_big(clip):
    with pytest.raises(LimitExceeded) as e:
        decode(clip.read_bytes(), max_bytes=10_000)
    assert e.value.status == 413


@pytest.mark.timeout(60)     # a hang fails here; how fast ffmpeg is stopped is not this test's business
def test_ffmpeg_timeout_is_an_error_not_a_hang(clip):
    with pytest.raises(BadMedia) as e:
        decode(clip.read_bytes(), timeout=0.0001)
    assert e.value.data["reason"] == "timeout"


def test_a_playlist_disguised_as_audio_cannot_read_other_files(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    playlist = f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nfile://{secret}\n#EXT-X-ENDLIST\n"
    with pytest.raises(BadMedia) as e:
        decode(playlist.encode())
    assert e.value.data["reason"] == "not_audio"


@pytest.mark.parametrize("fmt, args", [("wav", ()), ("mp3", ()), ("opus", ()), ("ogg", ()),
                                       ("flac", ()), ("aac", ()),
                                       ("pcm", ("-f", "s16le", "-ar", "24000", "-ac", "1"))])
def test_encode_every_output_format(clip, fmt, args):
    pcm = decode(clip.read_bytes())
    data = audio.encode(pcm, fmt)
    assert data
    assert probe_seconds(data, args) == pytest.approx(pcm.duration_s, abs=0.12)


def test_encode_speed_changes_the_tempo(clip):
    pcm = decode(clip.read_bytes())
    fast = audio.encode(pcm, "wav", speed=2.0)
    assert probe_seconds(fast) == pytest.approx(pcm.duration_s / 2, abs=0.1)
    slow = audio.encode(pcm, "mp3", speed=0.25)
    assert probe_seconds(slow) == pytest.approx(pcm.duration_s * 4, abs=0.3)


def test_unknown_output_format():
    with pytest.raises(BadRequest) as e:
        audio.check_format("midi")
    assert e.value.param == "response_format"


def test_wav_round_trip(tmp_path):
    pcm = audio.Pcm(bytes(range(256)) * 10, 8000)
    audio.write_wav(tmp_path / "x.wav", pcm)
    assert audio.read_wav(tmp_path / "x.wav") == pcm
    assert audio.read_wav_bytes(audio.wav_bytes(pcm)) == pcm


# -- sentences -----------------------------------------------------------------------------------

def test_sentences_split_at_ends_and_markdown_is_not_read():
    text = "Hello **there**. How are you today? I am fine, thanks!\n\nA new paragraph here."
    assert split_sentences(text) == ["Hello there.", "How are you today?", "I am fine, thanks!",
                                     "A new paragraph here."]


def test_a_long_sentence_is_cut_at_commas():
    text = ", ".join(["a clause with several words"] * 30) + "."
    parts = split_sentences(text, max_chars=100)
    assert len(parts) > 5 and all(len(p) <= 100 for p in parts)
    assert " ".join(parts).replace(" ", "") == text.replace(" ", "")


sentence = st.text(alphabet=st.sampled_from("abcdefgh ,"), min_size=1, max_size=60).map(
    lambda s: s.strip() or "x")
texts = st.lists(st.tuples(sentence, st.sampled_from([".", "!", "?", ""])), max_size=12).map(
    lambda parts: " ".join(s + p for s, p in parts))


@hsettings(max_examples=150, deadline=None)
@given(texts, st.integers(min_value=1, max_value=9))
def test_streaming_split_matches_whole_split_and_keeps_every_word(text, step):
    buf, streamed = SentenceBuffer(max_chars=80), []
    for i in range(0, len(text), step):
        streamed += buf.feed(text[i:i + step])
    streamed += buf.flush()
    assert all(len(s) <= 80 for s in streamed)
    assert " ".join(streamed).split() == " ".join(split_sentences(text, 80)).split()
    letters = lambda t: "".join(c for c in t if c.isalnum())  # noqa: E731
    assert letters("".join(streamed)) == letters(text)


def test_g711_matches_the_standard_tables():
    codes = bytes(range(256))
    assert audio.g711_decode(codes, "pcmu").data == audioop.ulaw2lin(codes, 2)
    assert audio.g711_decode(codes, "pcma").data == audioop.alaw2lin(codes, 2)
    for law in ("pcmu", "pcma"):
        decoded = audio.g711_decode(codes, law)       # each code's value comes back to it (mu-law's two zeros to one)
        assert audio.g711_decode(audio.g711_encode(decoded, law), law) == decoded
