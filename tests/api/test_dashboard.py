"""The dashboard: its JSON and event stream, access control, and the page itself in headless
Chromium (Debian's chromium package) — it loads, shows a queued job, and a click cancels it."""
from __future__ import annotations

import asyncio
import json
import logging
import sqlite3

import aiohttp
import pytest

from bots.api.app import create_app
from engine import ChatJob, ChatMessage, Origin, PromptTooLong
from tests.browser import Browser, chromium_path
from tests.conftest import make_settings
from tests.ops_helpers import fake_engine, serve

needs_chromium = pytest.mark.skipif(chromium_path() is None,
                                    reason="chromium is not installed (apt-get install chromium; "
                                           "`make test` installs it)")
KEY = "dash-key-0123456789"


def job(user: str, text: str = "hello") -> ChatJob:
    return ChatJob(messages=[ChatMessage("user", text)], origin=Origin(platform="slack", user=user))


async def rig(tmp_path, **settings):
    engine = fake_engine(make_settings(tmp_path, **settings))
    await engine.start()
    runner, base = await serve(create_app(engine))
    return engine, runner, base


async def hold_one_running_and_queue(engine, n: int = 2):
    """One job holds the model (the gate is shut), `n` more wait behind it."""
    engine.gate.clear()
    first = await engine.submit(job("U0"))
    await asyncio.wait_for(_until(lambda: first.status == "running"), 10)
    queued = [await engine.submit(job(f"U{i + 1}")) for i in range(n)]
    return first, queued


async def _until(predicate, step: float = 0.02):
    while not predicate():
        await asyncio.sleep(step)


async def test_state_lists_queue_running_models_usage_and_errors(tmp_path):
    engine, runner, base = await rig(tmp_path)
    try:
        first, queued = await hold_one_running_and_queue(engine)
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{base}/dashboard/state") as r:
                state = await r.json()
        assert state["queue_by_class"]["1"] == 2 and state["queue_max"] == 256
        assert [q["id"] for q in state["queued"]] == [h.id for h in queued]
        assert state["queued"][0]["position"] == 1 and state["queued"][0]["kind"] == "chat"
        assert state["running"][0]["id"] == first.id and state["running"][0]["device"] == "cpu"
        cpu = next(d for d in state["devices"] if d["device"] == "cpu")
        assert cpu["models"][0]["name"] == "fake-chat" and cpu["models"][0]["bytes"] == 2**20
        assert {u["user"] for u in state["usage"]} == {"slack:U0", "slack:U1", "slack:U2"}
        engine.gate.set()
        await asyncio.wait_for(first.result(), 10)
        bad = await engine.submit(ChatJob(messages=[ChatMessage("user", "x " * 5000)],
                                          origin=Origin(platform="slack", user="U9")))
        with pytest.raises(PromptTooLong):        # 5,000 words in a 4,096-token context
            await asyncio.wait_for(bad.result(), 10)
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{base}/dashboard/state") as r:
                state = await r.json()
        assert any(bad.id in e["source"] for e in state["errors"]), state["errors"]
    finally:
        engine.gate.set()
        await runner.cleanup()
        await engine.close()


async def test_events_stream_live_state_and_cancel_needs_the_header(tmp_path):
    engine, runner, base = await rig(tmp_path)
    try:
        first, queued = await hold_one_running_and_queue(engine, 1)
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{base}/dashboard/events") as r:
                assert r.headers["Content-Type"].startswith("text/event-stream")

                async def next_state():
                    data = None
                    async for line in r.content:
                        if line.startswith(b"data: "):
                            return json.loads(line[6:])
                    return data
                state = await asyncio.wait_for(next_state(), 10)
                assert state["queued"][0]["id"] == queued[0].id
                async with s.post(f"{base}/dashboard/jobs/{queued[0].id}/cancel") as c:
                    assert c.status == 403          # no X-Confab-Dashboard header: not from the page
                async with s.post(f"{base}/dashboard/jobs/{queued[0].id}/cancel",
                                  headers={"X-Confab-Dashboard": "1"}) as c:
                    assert c.status == 200 and (await c.json())["cancelled"] is True
                state = await asyncio.wait_for(next_state(), 10)
                assert state["queued"] == []
            async with s.post(f"{base}/dashboard/jobs/job_nope/cancel",
                              headers={"X-Confab-Dashboard": "1"}) as c:
                assert c.status == 404
        assert queued[0].status == "cancelled"
    finally:
        engine.gate.set()
        await runner.cleanup()
        await engine.close()
    rows = sqlite3.connect(tmp_path / "confab.db").execute(
        "SELECT user, action FROM audit WHERE action='cancel'").fetchall()
    assert rows == [("dashboard", "cancel")]


async def test_with_keys_the_dashboard_needs_one(tmp_path):
    engine, runner, base = await rig(tmp_path, api_keys=(KEY,))
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{base}/dashboard") as r:
                assert r.status == 200 and "<title>Confab dashboard</title>" in await r.text()
                assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
            for path in ("/dashboard/state", "/dashboard/events"):
                async with s.get(base + path) as r:
                    assert r.status == 401
            async with s.get(f"{base}/dashboard/state", headers={"Authorization": f"Bearer {KEY}"}) as r:
                assert r.status == 200
            async with s.post(f"{base}/dashboard/login", json={"key": "wrong"},
                              headers={"X-Confab-Dashboard": "1"}) as r:
                assert r.status == 401 and "Set-Cookie" not in r.headers
            async with s.post(f"{base}/dashboard/login", json={"key": KEY},
                              headers={"X-Confab-Dashboard": "1"}) as r:
                assert r.status == 200
                cookie = r.headers["Set-Cookie"]
            assert "HttpOnly" in cookie and "Secure" in cookie and "SameSite=Strict" in cookie
            assert KEY not in cookie                       # a session token, never the key
            token = cookie.split(";")[0].split("=", 1)[1]
            async with s.get(f"{base}/dashboard/state",
                             headers={"Cookie": f"confab_dashboard={token}"}) as r:
                assert r.status == 200
            async with s.get(f"{base}/dashboard/state",
                             headers={"Cookie": "confab_dashboard=forged"}) as r:
                assert r.status == 401
    finally:
        await runner.cleanup()
        await engine.close()


@needs_chromium
async def test_page_shows_a_queued_job_and_a_click_cancels_it(tmp_path):
    engine, runner, base = await rig(tmp_path / "data")
    browser = await Browser.launch(tmp_path / "chromium-profile")
    try:
        first, queued = await hold_one_running_and_queue(engine, 2)
        target = queued[1]
        await browser.goto(f"{base}/dashboard")
        row = f'#queued tr[data-job-id="{target.id}"]'
        await browser.wait_for(f"document.querySelector('{row}') !== null")
        await browser.wait_for("document.getElementById('status').textContent === 'live'")
        text = await browser.eval("document.getElementById('board').innerText")
        assert "fake-chat" in text and "slack:U2" in text and "interactive: 2" in text
        assert "cpu:" in text and "1 MiB" in text          # the loaded model and its memory
        await browser.screenshot(tmp_path / "dashboard-queued.png")
        late = await engine.submit(job('<img id="pwn" src="x">'))   # after the page loaded: live
        await browser.wait_for(f"document.querySelector('#queued tr[data-job-id=\"{late.id}\"]') !== null")
        assert await browser.eval("document.getElementById('pwn') === null")     # text, never HTML
        assert '<img id="pwn"' in await browser.eval("document.getElementById('queued').innerText")
        await browser.click(f'{row} button')
        await asyncio.wait_for(_until(lambda: target.status == "cancelled"), 10)
        await browser.wait_for(f"document.querySelector('{row}') === null")
        assert queued[0].status == "queued" and late.status == "queued"   # only the one clicked
        await browser.click(f'#running tr[data-job-id="{first.id}"] button')
        await asyncio.wait_for(_until(lambda: first.status == "cancelled"), 10)
        await browser.wait_for(f"document.querySelector('#running tr[data-job-id=\"{first.id}\"]') === null")
        shot = await browser.screenshot(tmp_path / "dashboard-cancelled.png")
        assert shot.stat().st_size > 10_000
    finally:
        engine.gate.set()
        await browser.close()
        await runner.cleanup()
        await engine.close()


@needs_chromium
async def test_page_asks_for_a_key_once_and_keeps_a_secure_cookie(tmp_path):
    engine, runner, base = await rig(tmp_path / "data", api_keys=(KEY,))
    browser = await Browser.launch(tmp_path / "chromium-profile")
    try:
        await browser.goto(f"{base}/dashboard")
        await browser.wait_for("!document.getElementById('login').hidden")
        await browser.type("#key", "not-the-key")
        await browser.click("#login button")
        await browser.wait_for("!document.getElementById('login-error').hidden")
        await browser.type("#key", KEY)
        await browser.click("#login button")
        await browser.wait_for("document.getElementById('status').textContent === 'live'")
        cookies = await browser.cookies(f"{base}/dashboard")
        (cookie,) = [c for c in cookies if c["name"] == "confab_dashboard"]
        assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
        assert cookie["value"] != KEY
        assert "confab_dashboard" not in await browser.eval("document.cookie")   # HttpOnly
        await browser.goto(f"{base}/dashboard")          # a new visit: no second prompt
        await browser.wait_for("document.getElementById('status').textContent === 'live'")
        assert await browser.eval("document.getElementById('login').hidden") is True
        await browser.screenshot(tmp_path / "dashboard-signed-in.png")
    finally:
        await browser.close()
        await runner.cleanup()
        await engine.close()


async def test_jobs_held_outside_the_local_scheduler_are_listed_too(tmp_path):
    """A scale-out front keeps its jobs in Redis, not in its own scheduler: the dashboard lists
    them from the engine's handles (here: a job taken out of the local queue by hand)."""
    engine, runner, base = await rig(tmp_path)
    try:
        first, queued = await hold_one_running_and_queue(engine, 1)
        remote = queued[0]
        engine.scheduler.cancel_queued(remote.id)        # as if it waited elsewhere
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{base}/dashboard/state") as r:
                state = await r.json()
        assert [q["id"] for q in state["queued"]] == [remote.id]
        assert state["queue_by_class"]["1"] == 1 and state["queued"][0]["user"] == "slack:U1"
    finally:
        engine.gate.set()
        await runner.cleanup()
        await engine.close()


# Every element of every card, in page coordinates, that lies outside its card; and whether the
# page itself scrolls sideways.
OVERFLOWS = """(() => {
  const bad = [];
  for (const card of document.querySelectorAll("main > section")) {
    const box = card.getBoundingClientRect();
    if (card.scrollWidth > card.clientWidth) bad.push(`${card.id} scrolls: ${card.scrollWidth} > ${card.clientWidth}`);
    for (const e of card.querySelectorAll("*")) {
      const r = e.getBoundingClientRect();
      if (r.width && (r.right > box.right + 0.5 || r.left < box.left - 0.5))
        bad.push(`${card.id}: <${e.tagName.toLowerCase()}> ${e.textContent.slice(0, 40)} spans ${r.left.toFixed(0)}-${r.right.toFixed(0)}, the card ${box.left.toFixed(0)}-${box.right.toFixed(0)}`);
    }
  }
  const page = document.documentElement;
  if (page.scrollWidth > page.clientWidth) bad.push(`the page scrolls sideways: ${page.scrollWidth} > ${page.clientWidth}`);
  return bad;
})()"""


@needs_chromium
async def test_no_card_overflows_and_an_open_server_says_so(tmp_path):
    """Long names (API keys with a user, Discord ids, job ids), big numbers and a long error in
    every card, at 1,400 px (where "Usage today" was wider than its card) and other widths: no
    card's content reaches outside it. CONFAB_HOST=0.0.0.0 with no API key: a banner says so."""
    engine, runner, base = await rig(tmp_path / "data", host="0.0.0.0", daily_gpu_seconds=86400)
    browser = await Browser.launch(tmp_path / "chromium-profile")
    try:
        first, queued = await hold_one_running_and_queue(engine, 2)
        for user in ("key-3f9a1c2b7d4e/alice.longname@example.com", "key-0a1b2c3d4e5f"):
            await engine.submit(ChatJob(messages=[ChatMessage("user", "hi")],
                                        origin=Origin(platform="api", user=user)))
        for user, seconds in (("api:key-3f9a1c2b7d4e", 12345.678), ("discord:1098765432109876543", 86399.9),
                              ("slack:T0123ABCDEF:U0123ABCDEFGH", 7.5)):
            engine.limits.charge(user, seconds)
        logging.getLogger("bots.api").error("a long failure: %s", "Traceback-free-but-unbroken-" * 20)
        await browser.goto(f"{base}/dashboard")
        await browser.wait_for("document.getElementById('status').textContent === 'live'")
        await browser.wait_for("document.getElementById('usage').innerText.includes('1098765432109876543')")
        await browser.wait_for("document.getElementById('errors').innerText.includes('unbroken')")
        for width in (1400, 1920, 1280, 1024, 700):
            await browser.resize(width)
            await browser.wait_for(f"document.documentElement.clientWidth <= {width}")
            assert await browser.eval(OVERFLOWS) == [], width
        await browser.resize(1400)
        await browser.screenshot(tmp_path / "dashboard-1400.png")
        banner = await browser.eval("(() => { const w = document.getElementById('warnings');"
                                    " return w.hidden ? null : w.innerText; })()")
        assert banner and "0.0.0.0" in banner and "CONFAB_API_KEYS" in banner, banner
    finally:
        engine.gate.set()
        await browser.close()
        await runner.cleanup()
        await engine.close()


@pytest.mark.parametrize("host, keys, open_", [("0.0.0.0", (), True), ("::", (), True),
                                               ("0.0.0.0", (KEY,), False), ("127.0.0.1", (), False),
                                               ("localhost", (), False)])
async def test_the_state_warns_when_the_server_is_open_to_the_network(tmp_path, host, keys, open_):
    engine, runner, base = await rig(tmp_path, host=host, api_keys=keys)
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{base}/dashboard/state", headers={"Authorization": f"Bearer {KEY}"}) as r:
                warnings = (await r.json())["warnings"]
        if open_:
            (warning,) = warnings
            assert f"{host}:" in warning and "no API key" in warning and "CONFAB_API_KEYS" in warning
        else:
            assert warnings == []
    finally:
        await runner.cleanup()
        await engine.close()
