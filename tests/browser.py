"""Headless Chromium driven over the Chrome DevTools protocol, from Python (aiohttp's
websocket client; nothing else to install). Just what the dashboard tests need: open a page,
evaluate JavaScript, click at an element's centre with real mouse events, read cookies, and
take a screenshot. Every wait is bounded."""
from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
import shutil
from pathlib import Path

import aiohttp

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--remote-debugging-port=0", "--window-size=1280,900"]


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class Browser:
    def __init__(self, proc, session: aiohttp.ClientSession, ws):
        self.proc, self._http, self._ws = proc, session, ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._reader = asyncio.create_task(self._read())
        self.session_id: str | None = None
        self.console: list[str] = []

    @classmethod
    async def launch(cls, user_data_dir: Path, timeout: float = 30, flags: tuple[str, ...] = ()) -> "Browser":
        exe = chromium_path()
        proc = await asyncio.create_subprocess_exec(
            exe, *FLAGS, *flags, f"--user-data-dir={user_data_dir}", "about:blank",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)

        async def ws_url() -> str:
            while True:
                line = await proc.stderr.readline()
                if not line:
                    raise RuntimeError("chromium exited before it listened")
                m = re.search(rb"DevTools listening on (ws://\S+)", line)
                if m:
                    return m.group(1).decode()
        url = await asyncio.wait_for(ws_url(), timeout)
        asyncio.create_task(_drain(proc.stderr))
        http = aiohttp.ClientSession()
        ws = await http.ws_connect(url, max_msg_size=64 * 2**20)
        browser = cls(proc, http, ws)
        target = await browser.send("Target.createTarget", {"url": "about:blank"}, page=False)
        attached = await browser.send("Target.attachToTarget", {"targetId": target["targetId"],
                                                               "flatten": True}, page=False)
        browser.session_id = attached["sessionId"]
        await browser.send("Page.enable")
        await browser.send("Runtime.enable")
        await browser.send("Network.enable")
        return browser

    async def _read(self) -> None:
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(msg.data)
            fut = self._pending.pop(data.get("id"), None)
            if fut and not fut.done():
                if "error" in data:
                    fut.set_exception(RuntimeError(f"CDP error: {data['error']}"))
                else:
                    fut.set_result(data.get("result", {}))
            elif data.get("method") == "Runtime.consoleAPICalled":
                self.console.append(" ".join(str(a.get("value", a.get("description", "")))
                                             for a in data["params"]["args"]))
            elif data.get("method") == "Runtime.exceptionThrown":
                self.console.append("exception: " + json.dumps(data["params"]["exceptionDetails"])[:500])

    async def send(self, method: str, params: dict | None = None, page: bool = True,
                   timeout: float = 20) -> dict:
        msg_id = next(self._ids)
        msg = {"id": msg_id, "method": method, "params": params or {}}
        if page:
            msg["sessionId"] = self.session_id
        fut = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = fut
        await self._ws.send_str(json.dumps(msg))
        return await asyncio.wait_for(fut, timeout)

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", {"url": url})
        await self.wait_for("document.readyState === 'complete'")

    async def eval(self, expression: str):
        out = await self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                   "awaitPromise": True})
        if "exceptionDetails" in out:
            raise RuntimeError(f"JS error in {expression!r}: {out['exceptionDetails']}")
        return out["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 15):
        """Poll a JS expression until it is truthy; returns its value."""
        async def poll():
            while True:
                value = await self.eval(expression)
                if value:
                    return value
                await asyncio.sleep(0.1)
        try:
            return await asyncio.wait_for(poll(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"timed out waiting for {expression!r}; console: {self.console[-5:]}") from None

    async def resize(self, width: int, height: int = 900) -> None:
        """Lay the page out in a viewport of this size (as a window of it would)."""
        await self.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height,
                                                                "deviceScaleFactor": 1, "mobile": False})

    async def click(self, selector: str) -> None:
        box = await self.wait_for(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return null;"
            f" e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect();"
            f" return {{x: r.left + r.width / 2, y: r.top + r.height / 2}}; }})()")
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            await self.send("Input.dispatchMouseEvent", {"type": kind, "x": box["x"], "y": box["y"],
                                                         "button": "left", "clickCount": 1})

    async def type(self, selector: str, text: str) -> None:
        await self.eval(f"document.querySelector({json.dumps(selector)}).focus()")
        await self.send("Input.insertText", {"text": text})

    async def cookies(self, url: str) -> list[dict]:
        return (await self.send("Network.getCookies", {"urls": [url]}))["cookies"]

    async def screenshot(self, path: Path) -> Path:
        data = await self.send("Page.captureScreenshot", {"format": "png"})
        path.write_bytes(base64.b64decode(data["data"]))
        return path

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.send("Browser.close", page=False), 5)
        except Exception:
            pass
        await self._ws.close()
        await self._http.close()
        self._reader.cancel()
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except asyncio.TimeoutError:
            self.proc.kill()
            await self.proc.wait()


async def _drain(stream) -> None:
    while await stream.readline():
        pass
