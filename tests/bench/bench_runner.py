"""The chat engine on llama.cpp's server, side by side in one run, on the default settings:

  - P8 concurrency: aggregate streamed tokens/s of 8 concurrent chats ÷ 1 chat, through Confab's
    API and through a bare llama-server (the same binary, 4 slots) called directly;
  - P7 prompt cache: four threads sent interleaved, ten turns each; time to first token of turn
    10 of a thread Confab has seen ÷ that of a same-length thread it has not (and the same for
    the bare server), then again after Confab unloads and reloads the model (slot restore);
  - P1 overhead: one stream through Confab ÷ the bare server;
  - class 0 under load: time to first token of a class-0 chat while class-1 chats fill every
    other slot ÷ the same on an idle server;
  - a 1,000-token prompt: time to first token through Confab ÷ llama-cpp-python called directly
    (its default batch);
  - after a burst: one request's tokens/s after 8 concurrent requests ÷ before them.

Confab runs as `confab serve` (a process of its own, default settings but the port and data
folder); the bare server is started with the same GGUF, threads and context per slot.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time

from tests.bench.bench_chat import VENV_BIN, free_port, stop, wait_http
from tests.scratch import scratch_dir

MODEL = "smollm2-135m-instruct"
TOKENS = int(os.environ.get("BENCH_RUNNER_TOKENS", "96"))
SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
STORY = "Write a long story about a dragon who learns to sail."


def client(base_url: str):
    from openai import OpenAI
    return OpenAI(base_url=base_url, api_key="bench", max_retries=0, timeout=600)


def stream(base_url: str, messages: list[dict], max_tokens: int = TOKENS, **extra) -> tuple[float, float, int]:
    """(time to first token, total time, completion tokens)."""
    started = time.perf_counter()
    first = None
    tokens = 0
    usage = None
    for chunk in client(base_url).chat.completions.create(
            model=MODEL, messages=messages, max_tokens=max_tokens, stream=True, temperature=0,
            stream_options={"include_usage": True}, extra_body=extra or None):
        if chunk.choices and chunk.choices[0].delta.content:
            tokens += 1
            first = first or time.perf_counter()
        if chunk.usage:
            usage = chunk.usage.completion_tokens
    end = time.perf_counter()
    return (first or end) - started, end - started, usage or tokens


def concurrent(base_url: str, n: int, messages_for=lambda i: [SYSTEM, {"role": "user", "content": STORY}],
               max_tokens: int = TOKENS, **extra) -> tuple[float, int]:
    """(wall time, total tokens) of n streams at once."""
    results: list[tuple[float, float, int]] = [None] * n   # type: ignore[list-item]

    def one(i: int) -> None:
        results[i] = stream(base_url, messages_for(i), max_tokens, **extra)

    started = time.perf_counter()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started, sum(r[2] for r in results)


def thread_turn(thread: int, turn: int) -> dict:
    return {"role": "user", "content": f"Thread {thread}, turn {turn}: tell me more about the "
            f"harbour town number {thread} and its {turn} boats, the sailors, the weather, the fish "
            "market, the bakery by the pier, the lighthouse keeper and the old map in the inn."}


def prompt_cache(base_url: str, threads: int = 4, turns: int = 10,
                 history: dict | None = None) -> tuple[float, float, dict]:
    """(TTFT of turn `turns` of a seen thread, TTFT of a same-length unseen thread, the threads)."""
    history = {t: [SYSTEM] for t in range(threads)}
    last = 0.0
    for turn in range(1, turns + 1):
        for t in range(threads):
            history[t].append(thread_turn(t, turn))
            ttft, _, _ = stream(base_url, history[t], max_tokens=24)
            history[t].append({"role": "assistant", "content": f"Turn {turn} of thread {t}: the boats sail."})
            if turn == turns and t == 0:
                last = ttft
    unseen = [SYSTEM]
    for turn in range(1, turns + 1):
        unseen.append(thread_turn(99, turn))
        if turn < turns:
            unseen.append({"role": "assistant", "content": f"Turn {turn} of thread 99: the boats sail."})
    fresh, _, _ = stream(base_url, unseen, max_tokens=24)
    return last, fresh, history


def after_restart(base_url: str, history: dict, turn: int = 11) -> tuple[float, float]:
    """TTFT of the next turn of a thread seen before Confab restarted ÷ an unseen one as long."""
    seen = history[1] + [thread_turn(1, turn)]
    unseen = [SYSTEM] + [m if m["role"] != "user" else dict(m, content=m["content"].replace("Thread 1", "Thread 77"))
                         for m in history[1][1:]] + [thread_turn(77, turn)]
    return stream(base_url, seen, max_tokens=24)[0], stream(base_url, unseen, max_tokens=24)[0]


def model_path() -> str:
    from models.registry import Registry
    data = scratch_dir("bench-runner-")
    return Registry(data, data / "models").installed()[MODEL].path


def start_confab(data_dir: str, port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONFAB_")}
    env.update(CONFAB_PORT=str(port), CONFAB_DATA_DIR=data_dir)
    proc = subprocess.Popen([str(VENV_BIN / "confab"), "serve"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/healthz", proc)
    return proc


def start_bare(port: int, slots: int = 4) -> subprocess.Popen:
    from models.llama_runner import find_binary
    threads = str(os.cpu_count() or 1)
    proc = subprocess.Popen([str(find_binary()), "-m", model_path(), "--host", "127.0.0.1",
                             "--port", str(port), "-np", str(slots), "-c", str(4096 * slots),
                             "--no-kv-unified", "-t", threads, "-tb", threads, "--no-ui"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/health", proc)
    return proc


def direct_ttft(prompt_messages: list[dict]) -> float:
    import llama_cpp
    llm = llama_cpp.Llama(model_path=model_path(), n_ctx=4096, n_threads=os.cpu_count() or 1,
                          verbose=False)
    try:
        llm.create_chat_completion(messages=[SYSTEM, {"role": "user", "content": "Hi"}], max_tokens=2)
        started = time.perf_counter()
        for chunk in llm.create_chat_completion(messages=prompt_messages, max_tokens=8, stream=True,
                                                temperature=0):
            if chunk["choices"][0]["delta"].get("content"):
                break
        return time.perf_counter() - started
    finally:
        llm.close()


def run() -> list[tuple[str, object, str]]:
    rows: list[tuple[str, object, str]] = []
    data_dir = str(scratch_dir("bench-runner-confab-"))
    confab_port, bare_port = free_port(), free_port()
    confab = start_confab(data_dir, confab_port)
    bare = start_bare(bare_port)
    confab_url = f"http://127.0.0.1:{confab_port}/v1"
    bare_url = f"http://127.0.0.1:{bare_port}/v1"
    try:
        for url in (confab_url, bare_url):   # loaded and warm
            stream(url, [SYSTEM, {"role": "user", "content": "Hi"}], max_tokens=4)

        # P1 and the first half of "after a burst"
        single = {}
        for name, url in (("confab", confab_url), ("bare", bare_url)):
            runs = [stream(url, [SYSTEM, {"role": "user", "content": STORY}]) for _ in range(3)]
            single[name] = statistics.median(r[2] / (r[1] - r[0]) for r in runs)
        rows.append(("P1 one stream: Confab / bare llama-server", single["confab"] / single["bare"],
                     f"decode tokens/s {single['confab']:.1f} vs {single['bare']:.1f}; goal >= 0.97"))

        # P8
        for name, url in (("Confab", confab_url), ("bare llama-server", bare_url)):
            wall1, tok1 = concurrent(url, 1)
            wall8, tok8 = concurrent(url, 8)
            rows.append((f"P8 8 chats / 1 chat, aggregate tokens/s ({name})", (tok8 / wall8) / (tok1 / wall1),
                         f"{tok8 / wall8:.1f} vs {tok1 / wall1:.1f} tokens/s; 4 slots"))

        # after a burst (Confab)
        after = statistics.median(r[2] / (r[1] - r[0]) for r in
                                  [stream(confab_url, [SYSTEM, {"role": "user", "content": STORY}]) for _ in range(3)])
        rows.append(("one stream after a burst of 8 / before it (Confab)", after / single["confab"],
                     f"{after:.1f} vs {single['confab']:.1f} tokens/s; goal >= 0.95"))

        # P7
        threads = None
        for name, url in (("Confab", confab_url), ("bare llama-server", bare_url)):
            seen, fresh, history = prompt_cache(url)
            threads = threads or history
            rows.append((f"P7 TTFT turn 10 seen / unseen thread ({name})", seen / fresh,
                         f"{seen * 1000:.0f} vs {fresh * 1000:.0f} ms; goal <= 0.30"))
        # ... and after Confab restarts: its slots saved at shutdown, restored when a thread returns
        stop(confab)
        confab = start_confab(data_dir, confab_port)
        stream(confab_url, [SYSTEM, {"role": "user", "content": "Hi"}], max_tokens=4)
        seen, fresh = after_restart(confab_url, threads)
        rows.append(("P7 after a restart: TTFT next turn seen / unseen thread (Confab)", seen / fresh,
                     f"{seen * 1000:.0f} vs {fresh * 1000:.0f} ms (slots restored from disk)"))

        # class 0 under load
        idle = statistics.median(stream(confab_url, [SYSTEM, {"role": "user", "content": "Hi there!"}],
                                        max_tokens=8, priority=0)[0] for _ in range(3))
        load = threading.Thread(target=concurrent, args=(confab_url, 8),
                                kwargs={"priority": 1, "max_tokens": 400})
        load.start()
        time.sleep(1.5)        # every class-1 slot busy (and more waiting) for the three below
        busy = statistics.median(stream(confab_url, [SYSTEM, {"role": "user", "content": "Hi there!"}],
                                        max_tokens=8, priority=0)[0] for _ in range(3))
        load.join()
        rows.append(("class-0 TTFT with class 1 filling the other slots / idle", busy / idle,
                     f"{busy * 1000:.0f} vs {idle * 1000:.0f} ms; goal <= 2.0"))

        # a 1,000-token prompt
        long_prompt = [SYSTEM, {"role": "user", "content": " ".join(
            f"Line {i}: the harbour's boats sail at dawn and return at dusk." for i in range(75))
            + " Summarise."}]
        confab_ttft = statistics.median(stream(confab_url, long_prompt, max_tokens=8)[0] for _ in range(2))
        # (the second is served from the prompt cache; time a fresh variant for the read cost)
        variant = [SYSTEM, dict(long_prompt[1], content="New: " + long_prompt[1]["content"])]
        confab_fresh = stream(confab_url, variant, max_tokens=8)[0]
        direct = direct_ttft(variant)
        rows.append(("TTFT 1,000-token prompt: Confab / llama-cpp-python", confab_fresh / direct,
                     f"{confab_fresh * 1000:.0f} vs {direct * 1000:.0f} ms (cached again: "
                     f"{confab_ttft * 1000:.0f} ms); goal <= 1.1"))
    finally:
        stop(confab)
        stop(bare)
    return rows


if __name__ == "__main__":
    for row in run():
        print(*row, sep="  ")
    sys.exit(0)
