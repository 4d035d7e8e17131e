"""The push-to-talk keys: Enter over a real pipe, a held key heard by the real pynput on a real
X server (Xvfb, keys pressed through XTest as a keyboard would), and the fallback to Enter,
said once, when pynput or a display is missing."""
from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import subprocess
import sys

import pytest

from engine.errors import BadRequest
from voice.keys import PRESS, QUIT, RELEASE, EnterKeys, HoldKey, open_keys


async def events(keys, n: int) -> list[str]:
    return [await asyncio.wait_for(keys.next(), 10) for _ in range(n)]


async def test_enter_keys_over_a_pipe():
    r, w = os.pipe()
    with os.fdopen(r, "r") as stdin, os.fdopen(w, "w") as typed:
        keys = EnterKeys(stdin)
        assert not keys.hold and keys.label == "Enter"
        typed.write("\n\nignored words\n")
        typed.flush()
        assert await events(keys, 3) == [PRESS, PRESS, PRESS]
        typed.close()
        assert await events(keys, 1) == [QUIT]


async def test_no_display_falls_back_to_enter_and_says_so_once(monkeypatch):
    for name in ("DISPLAY", "PYNPUT_BACKEND", "PYNPUT_BACKEND_KEYBOARD"):
        monkeypatch.delenv(name, raising=False)
    r, w = os.pipe()
    said: list[str] = []
    with os.fdopen(r, "r") as stdin, os.fdopen(w, "w") as typed:
        keys = await open_keys(None, False, stdin, said.append)
        assert isinstance(keys, EnterKeys)
        typed.write("\n")
        typed.flush()
        assert await events(keys, 1) == [PRESS]
    assert len(said) == 1, said
    assert said[0].startswith("Hold-to-talk is not available: there is no X display")
    assert "Using Enter instead" in said[0]


async def test_without_pynput_falls_back_to_enter_and_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynput", None)     # as if it were not installed
    monkeypatch.setenv("DISPLAY", ":0")
    said: list[str] = []
    r, w = os.pipe()
    with os.fdopen(r, "r") as stdin, os.fdopen(w, "w"):
        keys = await open_keys("f8", False, stdin, said.append)
    assert isinstance(keys, EnterKeys)
    assert len(said) == 1 and "pip install 'confab-bot[voice]'" in said[0], said


async def test_toggle_asks_for_enter_and_says_nothing():
    said: list[str] = []
    r, w = os.pipe()
    with os.fdopen(r, "r") as stdin, os.fdopen(w, "w"):
        assert isinstance(await open_keys("ctrl_r", True, stdin, said.append), EnterKeys)
    assert said == []


# -- a real X server --------------------------------------------------------------------------
# pynput's X listener notices stop() only at the next key event, so its (daemon) thread may
# still be reading when the test's X server goes away; what it raises then is no finding.
xlistener_outlives_x = pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")


@pytest.fixture
def xserver(monkeypatch):
    if importlib.util.find_spec("pynput") is None:      # importing it needs the display
        pytest.skip("pynput (the voice extra) is not installed")
    if not shutil.which("Xvfb"):
        pytest.skip("Xvfb (Debian's xvfb) is not installed")
    r, w = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(w), "-nolisten", "tcp", "-screen", "0", "320x240x24"],
                            pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(w)
    try:
        with os.fdopen(r) as f:
            number = f.readline().strip()       # Xvfb writes it once it accepts clients
        assert number, "Xvfb did not start"
        display = f":{number}"
        monkeypatch.setenv("DISPLAY", display)
        monkeypatch.delenv("PYNPUT_BACKEND", raising=False)
        yield display
    finally:
        proc.terminate()
        proc.wait(10)


def keyboard(display: str, *steps: tuple[str, str]) -> None:
    """Press and release keys through XTest, as a real keyboard's events reach the server."""
    from Xlib import XK, X
    from Xlib import display as xdisplay
    from Xlib.ext import xtest
    d = xdisplay.Display(display)
    try:
        for action, name in steps:
            code = d.keysym_to_keycode(XK.string_to_keysym(name))
            xtest.fake_input(d, X.KeyPress if action == "down" else X.KeyRelease, code)
            d.sync()
    finally:
        d.close()


@xlistener_outlives_x
async def test_a_held_key_through_pynput_on_x(xserver):
    r, w = os.pipe()
    with os.fdopen(r, "r") as stdin, os.fdopen(w, "w") as typed:
        keys = await HoldKey("ctrl_r", stdin).start()
        try:
            assert keys.hold and keys.label == "Right Ctrl"
            await asyncio.to_thread(keyboard, xserver,
                                    ("down", "b"), ("up", "b"),                # another key: nothing
                                    ("down", "Control_R"), ("down", "Control_R"),  # auto-repeat
                                    ("down", "Control_R"), ("up", "Control_R"),
                                    ("down", "Control_R"), ("up", "Control_R"))
            assert await events(keys, 4) == [PRESS, RELEASE, PRESS, RELEASE]
            typed.close()                                                     # Ctrl-D quits
            assert await events(keys, 1) == [QUIT]
        finally:
            keys.close()


@xlistener_outlives_x
async def test_a_letter_key_with_shift_still_counts(xserver):
    keys = await HoldKey("a", None).start()
    try:
        await asyncio.to_thread(keyboard, xserver, ("down", "Shift_L"), ("down", "a"),
                                ("up", "a"), ("up", "Shift_L"), ("down", "a"), ("up", "a"))
        assert await events(keys, 4) == [PRESS, RELEASE, PRESS, RELEASE]
    finally:
        keys.close()


@xlistener_outlives_x
async def test_open_keys_holds_when_it_can_and_refuses_an_unknown_key(xserver):
    said: list[str] = []
    keys = await open_keys("f8", False, None, said.append)
    try:
        assert isinstance(keys, HoldKey) and keys.label == "F8" and said == []
    finally:
        keys.close()
    with pytest.raises(BadRequest) as e:
        await open_keys("hyperdrive", False, None, said.append)
    assert "'hyperdrive' is not a key" in e.value.message
