"""`confab voice`: the push-to-talk loop on the microphone, or headless over files.

    confab voice                                   hold Right Ctrl to talk, let go to send
                                                   (pip install 'confab-bot[voice]'; Enter without pynput)
    confab voice --key f8 | --toggle               another key to hold; or Enter to start and stop
    confab voice --input q.wav --output a.wav      one turn from a file
    confab voice --input-dir turns/ --output-dir answers/   each file a turn, in name order,
                                                   in one conversation
"""
from __future__ import annotations

import asyncio
import getpass
import logging
import sys
from pathlib import Path

from engine import ConfabError, Engine
from engine.entry import configure_logging, settings_from
from engine.media import audio
from engine.messages import explain
from voice.devices import Microphone, SpeakerPlayer
from voice.keys import open_keys
from voice.loop import FilePlayer, VoiceLoop
from voice.ptt import push_to_talk

AUDIO_SUFFIXES = {".wav", ".ogg", ".oga", ".opus", ".webm", ".mp4", ".m4a", ".mp3", ".flac"}


def register_cli(sub, common) -> None:
    p = common(sub.add_parser("voice", help="push-to-talk voice loop (microphone, or files with --input)"))
    p.add_argument("--input", help="a recorded question (ogg, webm, m4a, mp3, wav, flac)")
    p.add_argument("--output", help="where to write the spoken answer (.wav, .mp3, .ogg, .flac)")
    p.add_argument("--input-dir", help="a folder of recorded turns, answered in name order")
    p.add_argument("--output-dir", help="where to write each turn's answer (NAME.wav)")
    p.add_argument("--stt-model", help="speech-to-text model (default CONFAB_STT_MODEL)")
    p.add_argument("--tts-model", help="voice model (default CONFAB_TTS_MODEL)")
    p.add_argument("--voice", help="a voice of that model (e.g. v2/en_speaker_6 for Bark)")
    p.add_argument("--user", default="", help="whose conversation this is (default: you)")
    p.add_argument("--key", default=None,
                   help="the key to hold while talking: ctrl_r (default), alt_r, f8, space, a letter...")
    p.add_argument("--toggle", action="store_true",
                   help="press Enter to start talking and Enter again to send, instead of holding a key")
    p.set_defaults(func=cmd_voice)
    p = sub.add_parser("wyoming", help="speech-to-text, text-to-speech and chat for Home "
                                       "Assistant over Wyoming (pip install 'confab-bot[wyoming]')")
    p.add_argument("--data-dir", help="where Confab keeps its state (CONFAB_DATA_DIR)")
    p.add_argument("--uri", default="tcp://127.0.0.1:10300",
                   help="where to listen (default tcp://127.0.0.1:10300; Wyoming has no keys)")
    p.set_defaults(func=cmd_wyoming)


def cmd_voice(args) -> None:
    settings = settings_from(args)
    configure_logging(settings.log_level)
    if args.input and not args.output:
        sys.exit("confab voice: --input needs --output (where to write the answer)")
    if args.input_dir and not args.output_dir:
        sys.exit("confab voice: --input-dir needs --output-dir")
    user = args.user or getpass.getuser()
    try:
        sys.exit(asyncio.run(run_voice(settings, args, user)))
    except KeyboardInterrupt:         # Ctrl-C ends the loop; the engine was closed on the way out
        sys.exit(130)


def cmd_wyoming(args) -> None:
    settings = settings_from(args)
    configure_logging(settings.log_level)
    host, _, port = args.uri.removeprefix("tcp://").rpartition(":")
    if not args.uri.startswith("tcp://") or not port.isdigit():
        sys.exit("confab wyoming: --uri must look like tcp://HOST:PORT")
    try:
        asyncio.run(run_wyoming(settings, host or "127.0.0.1", int(port)))
    except KeyboardInterrupt:
        sys.exit(130)


async def run_wyoming(settings, host: str, port: int) -> None:
    try:
        from voice.wyoming import serve
    except ImportError:
        sys.exit("confab wyoming needs the wyoming package: pip install 'confab-bot[wyoming]'")
    engine = Engine(settings)
    await engine.start(resume=False)
    try:
        server = await serve(engine, host, port)
        logging.getLogger("confab").info("Wyoming for Home Assistant on tcp://%s:%d", host, port)
        async with server:
            await server.serve_forever()
    finally:
        await engine.close()


async def run_voice(settings, args, user: str, out=sys.stdout) -> int:
    engine = Engine(settings)
    await engine.start(resume=False)
    try:
        options = dict(user=user, stt_model=args.stt_model, tts_model=args.tts_model, voice=args.voice)
        if args.input or args.input_dir:
            loop = VoiceLoop(engine, FilePlayer(), **options)
            if args.input:
                turns = [(Path(args.input), Path(args.output))]
            else:
                folder, dest = Path(args.input_dir), Path(args.output_dir)
                files = sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
                if not files:
                    print(f"confab voice: no audio files in {folder}", file=sys.stderr)
                    return 2
                turns = [(p, dest / f"{p.stem}.wav") for p in files]
            return await run_files(loop, turns, out)
        try:
            mic, speaker = Microphone(), SpeakerPlayer()
        except ConfabError as e:
            print(f"confab voice: {e.message}\nWithout a sound card, use --input and --output.",
                  file=sys.stderr)
            return 2
        loop = VoiceLoop(engine, speaker, keep_turns=True, **options)
        try:
            for turn in await loop.resume():      # a question a crash cut off: answered first
                print(f"(what you asked before the restart) you: {turn.transcript}\n"
                      f"confab: {turn.error or turn.answer}", file=out, flush=True)
            keys = await open_keys(getattr(args, "key", None), getattr(args, "toggle", False),
                                   sys.stdin, lambda text: print(text, file=out, flush=True))
            try:
                await push_to_talk(loop, mic, keys, out)
            finally:
                keys.close()
        finally:
            speaker.close()
        return 0
    except ConfabError as e:
        print(explain(e), file=sys.stderr)
        return 1
    finally:
        await engine.close()


async def run_files(loop, turns: list[tuple[Path, Path]], out=sys.stdout) -> int:
    """Each (question file, answer file) as one turn of the same conversation."""
    failures = 0
    for src, dst in turns:
        try:
            data = await asyncio.to_thread(src.read_bytes)
        except OSError as e:
            print(f"{src}: {e.strerror}", file=sys.stderr)
            failures += 1
            continue
        result = await loop.turn(data)
        print(f"[{src.name}] you: {result.transcript}", file=out)
        if result.error:
            print(f"[{src.name}] {result.error}", file=out)
            failures += 1
            continue
        print(f"[{src.name}] confab: {result.answer}", file=out)
        if result.note:
            print(f"[{src.name}] ({result.note})", file=out)
        fmt = dst.suffix.lower().lstrip(".") or "wav"
        fmt = {"oga": "ogg", "opus": "opus", "m4a": "aac"}.get(fmt, fmt)
        data = await asyncio.to_thread(audio.encode, result.audio, fmt)
        dst.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(dst.write_bytes, data)
        first = f"{result.first_audio_s:.2f}" if result.first_audio_s is not None else "-"
        print(f"[{src.name}] answer: {dst} ({result.audio.duration_s:.1f} s of audio; first audio "
              f"after {first} s, all of it after {result.full_audio_s or 0:.2f} s)", file=out)
    return 1 if failures else 0
