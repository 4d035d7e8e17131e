"""Streamed tokens/s of the offline chat model three ways, side by side in one run:
  - llama-cpp-python called directly in this process (the ceiling);
  - Confab's API (`confab serve`, a process of its own) through the official openai client;
  - llama-cpp-python's own OpenAI server (`python -m llama_cpp.server`) through the same client.
Same GGUF, same settings (context, batch, threads), same prompt at temperature 0, so the same
tokens. Rounds alternate the order; each figure is the median over the rounds. The speed is
completion tokens ÷ the time from sending the request to the last token, prompt included.
"""
from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.scratch import scratch_dir

ROUNDS = int(os.environ.get("BENCH_CHAT_ROUNDS", "4"))
MAX_TOKENS = int(os.environ.get("BENCH_CHAT_TOKENS", "128"))
CORES = os.cpu_count() or 1
# All cores, then one core left spare: with every core busy generating, the HTTP client and
# server steal time from the model itself; a GPU host always has a spare core.
THREAD_SETTINGS = [int(t) for t in os.environ.get(
    "BENCH_CHAT_THREADS", ",".join(str(t) for t in dict.fromkeys([CORES, max(1, CORES - 1)]))).split(",")]
N_CTX = 4096
MESSAGES = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Write a short story about a dragon who learns to bake bread."}]
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:3]} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer in {timeout} s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def through_openai(base_url: str, model: str) -> tuple[int, float]:
    from openai import OpenAI
    client = OpenAI(base_url=base_url, api_key="bench", max_retries=0, timeout=300)
    started = time.perf_counter()
    last = started
    tokens = 0
    stream = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=MAX_TOKENS,
                                            temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    usage = None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            tokens += 1
            last = time.perf_counter()
        if chunk.usage:
            usage = chunk.usage.completion_tokens
    return (usage or tokens), last - started


def run() -> list[tuple[str, object, str]]:
    rows: list[tuple[str, object, str]] = []
    for threads in THREAD_SETTINGS:
        rows += run_with(threads)
    return rows


def run_with(THREADS: int) -> list[tuple[str, object, str]]:
    import llama_cpp

    from models.registry import Registry

    name = "smollm2-135m-instruct"
    tmp = scratch_dir("confab-bench-")
    model = Registry(tmp, tmp / "models").installed()[name]
    n_batch = 512   # llama.cpp's default

    llm = llama_cpp.Llama(model_path=model.path, n_ctx=N_CTX, n_threads=THREADS, n_batch=n_batch,
                          n_ubatch=n_batch, verbose=False)

    def direct() -> tuple[int, float]:
        started = time.perf_counter()
        last, tokens = started, 0
        for chunk in llm.create_chat_completion(messages=MESSAGES, max_tokens=MAX_TOKENS,
                                                temperature=0, stream=True):
            if chunk["choices"][0]["delta"].get("content"):
                tokens += 1
                last = time.perf_counter()
        return tokens, last - started

    env = {**os.environ, "CONFAB_DATA_DIR": str(tmp), "CONFAB_THREADS": str(THREADS),
           "CONFAB_CONTEXT_TOKENS": str(N_CTX), "CONFAB_LOG_LEVEL": "WARNING"}
    env.pop("CONFAB_API_KEYS", None)
    confab_port, llama_port = free_port(), free_port()
    confab = subprocess.Popen([str(VENV_BIN / "confab"), "serve", "--port", str(confab_port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", model.path, "--model_alias", name,
         "--n_ctx", str(N_CTX), "--n_threads", str(THREADS), "--n_batch", str(n_batch),
         "--n_ubatch", str(n_batch), "--host", "127.0.0.1", "--port", str(llama_port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results: dict[str, list[float]] = {"direct": [], "confab": [], "llama_server": []}
    counts: dict[str, set[int]] = {k: set() for k in results}
    try:
        wait_http(f"http://127.0.0.1:{confab_port}/healthz", confab)
        wait_http(f"http://127.0.0.1:{llama_port}/v1/models", server)
        ways = {
            "direct": direct,
            "confab": lambda: through_openai(f"http://127.0.0.1:{confab_port}/v1", name),
            "llama_server": lambda: through_openai(f"http://127.0.0.1:{llama_port}/v1", name),
        }
        for way in ways.values():       # warm up: load, verify, first-call costs
            way()
        order = list(ways)
        for r in range(ROUNDS):
            for key in order[r % 3:] + order[: r % 3]:
                tokens, seconds = ways[key]()
                counts[key].add(tokens)
                results[key].append(tokens / seconds)
    finally:
        stop(confab)
        stop(server)
        llm.close()
    med = {k: statistics.median(v) for k, v in results.items()}
    spread = {k: f"min {min(v):.1f}, max {max(v):.1f} over {len(v)} rounds" for k, v in results.items()}
    tokens_note = ", ".join(f"{k} {sorted(v)}" for k, v in counts.items())
    at = f" ({THREADS} of {CORES} cores)"
    return [
        ("tokens/s llama-cpp-python direct" + at, med["direct"], spread["direct"]),
        ("tokens/s Confab API" + at, med["confab"], spread["confab"]),
        ("tokens/s llama_cpp.server" + at, med["llama_server"], spread["llama_server"]),
        ("Confab / direct" + at, med["confab"] / med["direct"], "goal >= 0.97"),
        ("Confab / llama_cpp.server" + at, med["confab"] / med["llama_server"], "goal >= 1.0"),
        ("completion tokens" + at, MAX_TOKENS, f"max_tokens; got {tokens_note}; n_batch {n_batch}"),
    ]


if __name__ == "__main__":
    for row in run():
        print(*row, sep="\t")
