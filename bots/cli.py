"""`confab`: run Confab, manage its models, and check the machine."""
from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import os
import shutil
import socket
import sys

from aiohttp import web

from bots import adapters, worker_cli
from bots.api.app import create_app
from bots.common.commands import Commands
from bots.console.console import Console
from engine import ConfigError
from engine.entry import configure_logging, settings_from, stop_on_signals
from engine.safety.exposure import open_to_network
from engine.safety.redact import install as install_redaction
from engine.scaleout.hosts import engine_for
from models.catalog import CATALOG
from models.devices import cuda_name, cuda_total_bytes
from models.pull import PullError, pull
from models.registry import ModelError, Registry

log = logging.getLogger("confab")


# -- run / serve ------------------------------------------------------------------------------

async def _serve(settings, doors: dict, with_adapters: bool, console: bool | None) -> None:
    engine = engine_for(settings)      # in-process, or the front of a Redis queue (--queue)
    await engine.start()
    app = create_app(engine)
    commands = Commands(engine)
    adapters.extend_commands(commands)
    started = []
    if with_adapters:
        try:
            started = await adapters.start_configured(engine, commands, app, doors)
        except ConfigError as e:   # a wrong token or a missing setting: say which, not a traceback
            await engine.close()
            sys.exit(f"confab: {e}")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    try:
        await site.start()
    except OSError as e:
        await engine.close()
        sys.exit(f"confab: cannot listen on {settings.host}:{settings.port}: {e.strerror}. "
                 "Is another Confab running? Use --port or CONFAB_PORT.")
    chat = [m.name for m in engine.installed("chat")]
    log.info("Confab API on http://%s:%d/v1 (chat models: %s)", settings.host, settings.port,
             ", ".join(chat) or "none installed")
    if warning := open_to_network(settings):
        log.warning("OPEN TO THE NETWORK: %s", warning)
    stop = stop_on_signals()
    tasks = []
    if with_adapters and console is not False and not started and (console or sys.stdin.isatty()):
        print(f"Confab API on http://{settings.host}:{settings.port}/v1", flush=True)
        tasks.append(asyncio.create_task(Console(engine, commands).run()))
        tasks[-1].add_done_callback(lambda _: stop.set())
    await stop.wait()
    for t in tasks:
        t.cancel()
    await adapters.stop_all(started)
    await runner.cleanup()
    await engine.close()


def cmd_run(args) -> None:
    settings = settings_from(args)
    configure_logging(settings.log_level)
    install_redaction(settings, *args.doors.values())
    asyncio.run(_serve(settings, args.doors, with_adapters=True, console=args.console))


def cmd_serve(args) -> None:
    settings = settings_from(args)
    configure_logging(settings.log_level)
    install_redaction(settings, *args.doors.values())
    asyncio.run(_serve(settings, args.doors, with_adapters=False, console=False))


# -- models ---------------------------------------------------------------------------------

def _registry(settings):
    return Registry(settings.data_path, settings.models_path)


def cmd_models_list(args) -> None:
    settings = settings_from(args)
    installed = _registry(settings).installed()
    print(f"{'name':<28} {'kind':<10} {'size':>9}  {'status':<10} source")
    for entry in CATALOG:
        status = "installed" if entry.name in installed else "-"
        print(f"{entry.name:<28} {entry.kind:<10} {entry.size / 2**30:>7.1f}G  {status:<10} {entry.source}")
    for name, m in sorted(installed.items()):
        if m.source == "local" and not m.parent:
            print(f"{name:<28} {m.kind:<10} {m.size / 2**30:>7.1f}G  {'added':<10} {m.path}")
    adapters = sorted((m for m in installed.values() if m.parent), key=lambda m: (m.parent, m.name))
    for m in adapters:
        if m is adapters[0] or m.parent != adapters[adapters.index(m) - 1].parent:
            print(f"\nadapters of {m.parent}:")
        print(f"  {m.name:<26} {'lora':<10} {m.size / 2**20:>7.1f}M  scale {m.options.get('scale', 1.0):<4g} {m.path}")


def cmd_models_pull(args) -> None:
    settings = settings_from(args)
    try:
        model = pull(args.name, settings.models_path, endpoint=args.endpoint)
    except PullError as e:
        sys.exit(f"confab: {e}")
    print(f"Pulled {model.name} ({model.kind}) into {model.path}")


def cmd_models_add(args) -> None:
    settings = settings_from(args)
    try:
        model = _registry(settings).add(args.path, name=args.name, kind=args.kind,
                                        base=args.base, scale=args.scale)
    except ModelError as e:
        sys.exit(f"confab: {e}")
    if model.parent:
        print(f"Added {model.name}: a {model.kind} LoRA of {model.parent} (rank {model.options['rank']}, "
              f"{model.options['layers']} layers, scale {model.options['scale']:g}) from {model.path}. "
              f"Use it by its name wherever a model is named.")
        return
    print(f"Added {model.name} ({model.kind}, {model.fmt}) from {model.path}")


def cmd_models_verify(args) -> None:
    settings = settings_from(args)
    registry = _registry(settings)
    installed = registry.installed()
    names = args.names or sorted(installed)
    bad = 0
    for name in names:
        model = installed.get(name)
        if model is None:
            print(f"{name}: not installed")
            bad += 1
            continue
        problems = registry.verify(model, force=True)
        if not model.checksums:
            print(f"{name}: no checksums recorded")
        elif problems:
            bad += 1
            print(f"{name}: FAILED — " + "; ".join(problems))
        else:
            print(f"{name}: ok ({len(model.checksums)} file(s), sha256 verified)")
    if bad:
        sys.exit(1)


# -- doctor ---------------------------------------------------------------------------------

def cmd_doctor(args) -> None:
    settings = settings_from(args)
    ok = True

    def line(good: bool, what: str, detail: str) -> None:
        nonlocal ok
        ok &= good
        print(f"{'ok ' if good else 'BAD'}  {what:<14} {detail}")

    gpu = cuda_total_bytes()
    print(f"     {'gpu':<14} {cuda_name() or 'CUDA GPU'} with {gpu / 2**30:.1f} GiB" if gpu
          else f"     {'gpu':<14} none found; models run on the CPU")
    ffmpeg = shutil.which("ffmpeg")
    line(bool(ffmpeg), "ffmpeg", ffmpeg or "not found: install it (apt-get install ffmpeg) for audio")
    for module, extra in (("llama_cpp", "chat"), ("faster_whisper", "speech"), ("piper", "speech"),
                          ("sentence_transformers", "kb"), ("slack_bolt", "slack"), ("discord", "discord")):
        found = importlib.util.find_spec(module) is not None
        print(f"{'ok ' if found else '-- '}  {module:<14} {'installed' if found else f'not installed (confab-bot[{extra}])'}")
    registry = _registry(settings)
    installed = registry.installed()
    line(any(m.kind == "chat" for m in installed.values()), "chat model",
         ", ".join(n for n, m in installed.items() if m.kind == "chat") or "none: confab models pull NAME")
    for name, model in sorted(installed.items()):
        problems = registry.verify(model)
        line(not problems, name, "verified" if not problems else "; ".join(problems))
    with socket.socket() as s:
        try:
            s.bind((settings.host, settings.port))
            line(True, "port", f"{settings.host}:{settings.port} is free")
        except OSError:
            line(False, "port", f"{settings.host}:{settings.port} is in use")
    if warning := open_to_network(settings):
        print(f"WARN {'network':<14} {warning}")     # a warning: containers listen on all addresses
    else:
        print(f"ok   {'network':<14} " + ("API keys required" if settings.api_keys
                                          else f"{settings.host} is this machine only"))
    data = settings.data_path
    try:
        data.mkdir(parents=True, exist_ok=True)
        line(os.access(data, os.W_OK), "data folder", str(data))
    except OSError as e:
        line(False, "data folder", f"{data}: {e.strerror}")
    sys.exit(0 if ok else 1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="confab", description="A self-hosted AI assistant for teams.")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--host", help="address to listen on (CONFAB_HOST, default 127.0.0.1)")
        p.add_argument("--port", type=int, help="port to listen on (CONFAB_PORT, default 8080)")
        p.add_argument("--data-dir", help="where Confab keeps its state (CONFAB_DATA_DIR)")
        return p

    p = common(sub.add_parser("run", help="engine, API and every configured adapter (the console when none)"))
    p.add_argument("--console", action=argparse.BooleanOptionalAction, default=None,
                   help="force the terminal console on or off (default: on when stdin is a terminal "
                        "and no platform token is set)")
    p.set_defaults(func=cmd_run)
    common(sub.add_parser("serve", help="engine and API only")).set_defaults(func=cmd_serve)

    models = sub.add_parser("models", help="list, pull, add and verify models")
    msub = models.add_subparsers(dest="models_command", required=True)
    common(msub.add_parser("list", help="the catalog and what is installed")).set_defaults(func=cmd_models_list)
    p = common(msub.add_parser("pull", help="download a catalog model from Hugging Face"))
    p.add_argument("name")
    p.add_argument("--endpoint", help="hub address (default HF_ENDPOINT or https://huggingface.co)")
    p.set_defaults(func=cmd_models_pull)
    p = common(msub.add_parser("add", help="register a local model file or folder"))
    p.add_argument("path")
    p.add_argument("--name")
    p.add_argument("--kind", choices=["chat", "stt", "tts", "image", "vision", "embedding", "reranker", "lora"])
    p.add_argument("--base", help="for --kind lora: the installed model it adapts (found from the file when one fits)")
    p.add_argument("--scale", type=float, help="for --kind lora: how strongly it applies (default 1)")
    p.set_defaults(func=cmd_models_add)
    p = common(msub.add_parser("verify", help="check every installed model's SHA-256"))
    p.add_argument("names", nargs="*")
    p.set_defaults(func=cmd_models_verify)

    common(sub.add_parser("doctor", help="check GPU, ffmpeg, models and ports")).set_defaults(func=cmd_doctor)
    worker_cli.register_cli(sub, common)     # confab worker, confab db, --queue
    adapters.extend_cli(sub, common)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:    # every verb refuses a bad door setting, as it refuses a bad engine one
        args.doors = adapters.door_settings()
    except ConfigError as e:
        sys.exit(f"confab: {e}")
    args.func(args)


if __name__ == "__main__":
    main()
