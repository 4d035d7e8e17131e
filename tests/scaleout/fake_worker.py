"""`confab worker` with the fake backend of tests/scaleout/fakes.py, as a real process:
python -m tests.scaleout.fake_worker --queue redis://... --name w1 --data-dir DIR"""
from __future__ import annotations

import argparse
import asyncio
import logging

from tests.scaleout.fakes import fake_load  # noqa: F401  (registers the sleep job kind)


def main() -> None:
    from bots.worker_cli import _worker
    from engine.config import Settings
    p = argparse.ArgumentParser()
    p.add_argument("--queue", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--lease", type=float, default=2.0)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {args.name} %(name)s: %(message)s")
    settings = Settings.from_env(env={}, dotenv=None, data_dir=args.data_dir, queue_url=args.queue,
                                 lease_s=args.lease, device="cpu")
    asyncio.run(_worker(settings, args.name, load=fake_load, gpu_total=None))


if __name__ == "__main__":
    main()
