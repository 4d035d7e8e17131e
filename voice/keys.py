"""Where the push-to-talk loop's key comes from: a key held down (pynput), or Enter on a terminal.

A key source turns its device into three events on the event loop: PRESS, RELEASE and QUIT.
With `hold`, PRESS starts a turn and RELEASE sends it; without it (Enter), each PRESS toggles.
pynput is optional and imported only here, when hold-to-talk is asked for; without it, or
without a display or keyboard to listen to, `open_keys` says so once and falls back to Enter.
"""
from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
import threading
from typing import Callable, Protocol, TextIO

from engine.errors import BadRequest

PRESS, RELEASE, QUIT = "press", "release", "quit"
DEFAULT_KEY = "ctrl_r"      # types nothing into the terminal and does not auto-repeat
LISTENER_START_S = 5.0
_LABELS = {"ctrl_r": "Right Ctrl", "ctrl_l": "Left Ctrl", "alt_r": "Right Alt", "alt_l": "Left Alt",
           "alt_gr": "AltGr", "shift_r": "Right Shift", "shift_l": "Left Shift", "cmd_r": "Right Cmd"}

# Why holding a key cannot work here.
PTT_NO_PYNPUT = "pynput is not installed (pip install 'confab-bot[voice]')"
PTT_NO_DISPLAY = ("there is no X display to hear the key on (DISPLAY is not set; on Wayland "
                  "without XWayland, PYNPUT_BACKEND=uinput needs root)")


def ptt_no_keyboard(detail: str) -> str:
    return f"pynput cannot listen to the keyboard ({detail})"


def ptt_fallback(reason: str) -> str:
    return (f"Hold-to-talk is not available: {reason}. Using Enter instead: press Enter to start "
            "talking and Enter again to send (a pause in speech sends it too).")


def ptt_bad_key(name: str) -> str:
    return (f"'{name}' is not a key pynput knows; use a key name such as ctrl_r, alt_r, f8, "
            "scroll_lock or space, or a single character.")



class KeySource(Protocol):
    hold: bool        # True: RELEASE sends the turn; False: a second PRESS does
    label: str        # the key's name for people, e.g. "Right Ctrl" or "Enter"

    async def next(self) -> str:
        """The next event: PRESS, RELEASE or QUIT."""

    def close(self) -> None:
        """Stop listening."""


class KeysUnavailable(Exception):
    """Hold-to-talk cannot work here; `reason` says why, in people's words."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class QueuedKeys:
    """Events posted from any thread (a keyboard hook, a stdin reader), read on the event loop."""
    hold = False
    label = ""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()

    def post(self, event: str) -> None:
        """Any thread."""
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, event)
        except RuntimeError:          # the event loop is closed: nobody is listening any more
            pass

    async def next(self) -> str:
        return await self._queue.get()

    def close(self) -> None:
        pass

    def _watch_stdin(self, stdin: TextIO, on_line: Callable[[], None]) -> None:
        """Read lines on a daemon thread (a blocked read must not hold up exit); EOF is QUIT."""
        def read() -> None:
            while True:
                try:
                    line = stdin.readline()
                except (OSError, ValueError):     # closed underneath us
                    line = ""
                if not line:
                    self.post(QUIT)
                    return
                on_line()

        threading.Thread(target=read, name="confab-stdin", daemon=True).start()


class EnterKeys(QueuedKeys):
    """Enter on a terminal (or any text stream): each line is a PRESS; end of input is QUIT."""
    hold = False
    label = "Enter"

    def __init__(self, stdin: TextIO = sys.stdin):
        super().__init__()
        self._watch_stdin(stdin, lambda: self.post(PRESS))


def _pynput_keyboard():
    if importlib.util.find_spec("pynput") is None:
        raise KeysUnavailable(PTT_NO_PYNPUT)
    if (sys.platform.startswith("linux") and not os.environ.get("DISPLAY")
            and not os.environ.get("PYNPUT_BACKEND") and not os.environ.get("PYNPUT_BACKEND_KEYBOARD")):
        raise KeysUnavailable(PTT_NO_DISPLAY)
    try:
        from pynput import keyboard
    except ImportError as e:      # pynput says which platform backend failed and why
        raise KeysUnavailable(ptt_no_keyboard(str(e).splitlines()[0])) from None
    return keyboard


def parse_key(keyboard, name: str):
    """A pynput key from a name (ctrl_r, f8, space) or a single character."""
    name = name.strip()
    if len(name) == 1:
        return keyboard.KeyCode.from_char(name.lower())
    try:
        return keyboard.Key[name.lower()]
    except KeyError:
        raise BadRequest(ptt_bad_key(name), param="key") from None


def key_label(name: str) -> str:
    name = name.strip()
    return _LABELS.get(name.lower(), name if len(name) == 1 else name.replace("_", " ").title())


class HoldKey(QueuedKeys):
    """A key held down anywhere on the desktop, heard through pynput. The key's auto-repeat
    (X sends a press per repeat while it is held) gives one PRESS; end of stdin is QUIT."""
    hold = True

    def __init__(self, key: str = DEFAULT_KEY, stdin: TextIO | None = sys.stdin):
        keyboard = _pynput_keyboard()
        self.key = parse_key(keyboard, key)
        self.label = key_label(key)
        super().__init__()
        self._down = False
        self._lock = threading.Lock()      # guards _down: pynput calls back on its own thread
        self._stdin = stdin
        self._listener = keyboard.Listener(on_press=self._on_press, on_release=self._on_release)

    def _matches(self, key) -> bool:
        if key is None:
            return False
        if key == self.key:
            return True
        char = getattr(key, "char", None)           # the same letter with Shift or Caps Lock
        want = getattr(self.key, "char", None)
        return char is not None and want is not None and char.lower() == want

    def _on_press(self, key, injected: bool = False) -> None:
        if self._matches(key):
            with self._lock:
                was_down, self._down = self._down, True
            if not was_down:
                self.post(PRESS)

    def _on_release(self, key, injected: bool = False) -> None:
        if self._matches(key):
            with self._lock:
                was_down, self._down = self._down, False
            if was_down:
                self.post(RELEASE)

    async def start(self) -> "HoldKey":
        """Start listening; KeysUnavailable when the listener cannot hear the keyboard."""
        self._listener.start()
        if not await asyncio.to_thread(self._wait_ready, LISTENER_START_S):
            self.close()
            raise KeysUnavailable(ptt_no_keyboard("its listener did not start"))
        if self._stdin is not None:
            self._watch_stdin(self._stdin, lambda: None)
        return self

    def _wait_ready(self, timeout: float) -> bool:
        # pynput's own wait() has no timeout and never returns if the listener thread failed
        waiter = threading.Thread(target=self._listener.wait, name="confab-keys-ready", daemon=True)
        waiter.start()
        for _ in range(max(1, int(timeout / 0.05))):
            waiter.join(0.05)
            if not waiter.is_alive():
                return self._listener.is_alive()
            if not self._listener.is_alive():
                return False
        return False

    def close(self) -> None:
        # On X, pynput's listener notices stop() only at the next key event, so it is not
        # joined here; its thread is a daemon and does not hold up exit.
        self._listener.stop()


async def open_keys(key: str | None = None, toggle: bool = False, stdin: TextIO = sys.stdin,
                    say: Callable[[str], None] = print) -> KeySource:
    """Hold-to-talk when pynput can hear the keyboard, else Enter (and `say` why, once)."""
    if not toggle:
        try:
            return await HoldKey(key or DEFAULT_KEY, stdin).start()
        except KeysUnavailable as e:
            say(ptt_fallback(e.reason))
    return EnterKeys(stdin)
