"""Headless Chromium for tests, driven over its DevTools protocol on a pipe: load a page, report every request it made.

Chromium is started with ``--remote-debugging-pipe``: it reads JSON commands
from its file descriptor 3 and writes answers and events to 4, each message
ended by a NUL byte, so no port and no websocket client are needed.  The
flags keep it from reaching anything but the page (no background
networking, component updates, sync or QUIC) and its profile is a fresh
folder of the test's.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

__all__ = ["Chromium", "Load", "Loaded", "find_chromium"]

#: The flags the tests run Chromium with: headless, and quiet on the network.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--ignore-certificate-errors",  # the test's own self-signed certificate
    "--remote-debugging-pipe",
)
#: Bound on the browser starting, and on one page load with all its requests.
START_WITHIN = 30.0
LOAD_WITHIN = 30.0


def find_chromium() -> Optional[str]:
    """Debian's chromium, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class Loaded:
    """One request the page made, as the browser saw it."""

    url: str
    status: int = 0
    protocol: str = ""
    mime_type: str = ""
    headers: dict[str, str] = field(default_factory=dict)  # names lower-cased
    decoded_length: int = 0  # the body's bytes after decoding
    encoded_length: int = 0  # bytes on the wire (headers and frames included)
    finished: bool = False
    failed: Optional[str] = None  # the browser's error text


@dataclass
class Load:
    """A page load: every request in the order made, and whether the load event fired."""

    requests: list[Loaded]
    load_event: bool


class Chromium:
    """One headless browser with a fresh profile in *workdir*; :meth:`load` a URL, :meth:`close` at the end."""

    def __init__(self, binary: str, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()
        self._log = open(workdir / "chromium.log", "wb")

        def child_fds() -> None:
            # The DevTools pipe: the browser reads fd 3 and writes fd 4.
            # Moved above 10 first, since the pipes may already be 3 or 4.
            reading = fcntl.fcntl(to_browser_read, fcntl.F_DUPFD, 10)
            writing = fcntl.fcntl(from_browser_write, fcntl.F_DUPFD, 10)
            os.dup2(reading, 3)  # dup2 leaves 3 and 4 open across exec
            os.dup2(writing, 4)

        self.process = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={workdir / 'profile'}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            preexec_fn=child_fds,
            close_fds=False,
        )
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict[str, Any]] = []
        self.workdir = workdir
        self.send("Browser.getVersion", within=START_WITHIN)

    # -- the pipe -------------------------------------------------------------------------

    def _read_message(self, deadline: float) -> dict[str, Any]:
        import select

        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no message from Chromium in time")
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if ready:
                chunk = os.read(self._from_browser, 1 << 16)
                if not chunk:
                    raise ConnectionError(f"Chromium closed its pipe: {self.log_text()[-2000:]}")
                self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def send(self, method: str, params: Optional[dict[str, Any]] = None, *, session: Optional[str] = None,
             within: float = 10.0) -> dict[str, Any]:
        """Send one command and wait for its answer (events that arrive meanwhile are kept)."""
        self._next_id += 1
        command: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            command["sessionId"] = session
        os.write(self._to_browser, json.dumps(command).encode() + b"\0")
        deadline = time.monotonic() + within
        while True:
            message = self._read_message(deadline)
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self._events.append(message)

    def _event(self, deadline: float) -> dict[str, Any]:
        if self._events:
            return self._events.pop(0)
        return self._read_message(deadline)

    # -- a page load ------------------------------------------------------------------------

    def load(self, url: str, *, settle: float = 1.0) -> Load:
        """Open *url* in a new tab and record its requests until the load event and then *settle* quiet seconds."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.send("Network.enable", session=session)
        self.send("Network.setCacheDisabled", {"cacheDisabled": True}, session=session)
        self.send("Page.enable", session=session)
        self.send("Page.navigate", {"url": url}, session=session)
        requests: dict[str, Loaded] = {}
        order: list[str] = []
        load_event = False
        deadline = time.monotonic() + LOAD_WITHIN
        quiet_until: Optional[float] = None
        while time.monotonic() < deadline:
            pending = [r for r in requests.values() if not r.finished and r.failed is None]
            if load_event and not pending:
                quiet_until = quiet_until or time.monotonic() + settle
                if time.monotonic() >= quiet_until:
                    break
            try:
                event = self._event(min(deadline, quiet_until or deadline))
            except TimeoutError:
                continue
            if event.get("sessionId") != session:
                continue
            method, params = event.get("method"), event.get("params", {})
            request_id = params.get("requestId")
            if method == "Network.requestWillBeSent":
                if request_id not in requests:
                    order.append(request_id)
                requests[request_id] = Loaded(params["request"]["url"])
                quiet_until = None
            elif method == "Network.responseReceived" and request_id in requests:
                response = params["response"]
                loaded = requests[request_id]
                loaded.status = int(response.get("status", 0))
                loaded.protocol = response.get("protocol", "")
                loaded.mime_type = response.get("mimeType", "")
                loaded.headers = {k.lower(): v for k, v in response.get("headers", {}).items()}
            elif method == "Network.dataReceived" and request_id in requests:
                requests[request_id].decoded_length += int(params.get("dataLength", 0))
            elif method == "Network.loadingFinished" and request_id in requests:
                requests[request_id].finished = True
                requests[request_id].encoded_length = int(params.get("encodedDataLength", 0))
            elif method == "Network.loadingFailed" and request_id in requests:
                requests[request_id].failed = params.get("errorText", "failed")
            elif method == "Page.loadEventFired":
                load_event = True
        self.send("Target.closeTarget", {"targetId": target})
        return Load([requests[i] for i in order], load_event)

    def log_text(self) -> str:
        path = self.workdir / "chromium.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        """Ask the browser to quit; kill it if it does not within a few seconds."""
        try:
            if self.process.poll() is None:
                self.send("Browser.close", within=5.0)
        except (OSError, TimeoutError, ConnectionError, RuntimeError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        self._log.close()
