"""A RoadRunner-protocol PHP worker over blocking pipes, driven by fephp.roadrunner's client, for integration tests.

No reactor: the codec and the PHP side are what is under test.  Every read
waits on the pipe with a deadline, never on the clock.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator, Mapping, Optional, Sequence

from fephp.roadrunner import ClientConnection, Event, JobError, ResponseEnd, UploadTree, WorkerReady, WorkerStopping, encode_request_context

from .processes import require_binary

__all__ = ["DEADLINE", "PipeWorker", "context", "is_end", "php_cli", "ready_worker", "require_php_files"]

#: Bound on any one wait for the worker.
DEADLINE = 15.0


def php_cli() -> str:
    """The PHP command-line binary, unversioned or 8.x; skip (fail under CI) without it."""
    names = ["php"] + [f"php8.{minor}" for minor in (4, 3, 2, 1, 0)]
    return require_binary(next(filter(None, map(shutil.which, names)), None), "php (the CLI, php8.2-cli)")


def is_end(event: Event) -> bool:
    """The last event of one request's answer."""
    return isinstance(event, (ResponseEnd, JobError, WorkerStopping))


class PipeWorker:
    """One PHP worker process and fephp's client end of its pipes."""

    def __init__(self, script: Path, php_args: Sequence[str] = ()) -> None:
        self.proc = subprocess.Popen(
            [php_cli(), *php_args, str(script)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.client = ClientConnection()

    def send(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def until(self, done: Callable[[Event], bool]) -> list[Event]:
        """Feed the worker's stdout to the client until an event satisfies *done*; fail at the deadline or EOF."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        events: list[Event] = []
        end = time.monotonic() + DEADLINE
        while not any(done(event) for event in events):
            readable, _, _ = select.select([fd], [], [], max(end - time.monotonic(), 0))
            assert readable, f"the worker said nothing for {DEADLINE} s; events so far: {events}"
            data = os.read(fd, 1 << 20)
            assert data, f"the worker closed its stdout; stderr: {self.stderr_so_far()!r}"
            events += self.client.receive_data(data)
        return events

    def handshake(self) -> list[Event]:
        self.send(self.client.start())
        return self.until(lambda e: isinstance(e, WorkerReady))

    def exchange(self, context: bytes, body: bytes = b"") -> list[Event]:
        """Send one request and return its answer's events."""
        self.send(self.client.send_request(context, body))
        return self.until(is_end)

    def stderr_so_far(self) -> bytes:
        """What the worker wrote to stderr, once it has exited (b"" while it runs: a read would block)."""
        if self.proc.poll() is None or self.proc.stderr is None or self.proc.stderr.closed:
            return b""
        return self.proc.stderr.read()

    def wait_exit(self) -> tuple[int, bytes]:
        """Wait (at most DEADLINE) for the worker to exit by itself; its exit status and its stderr."""
        self.proc.wait(DEADLINE)
        return self.close()

    def close(self) -> tuple[int, bytes]:
        """Kill the worker if it still runs; its exit status and its stderr (b"" when asked again)."""
        if self.proc.poll() is None:
            self.proc.kill()
        status = self.proc.wait(DEADLINE)
        err = b""
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None and not pipe.closed:
                if pipe is self.proc.stderr:
                    err = pipe.read()  # the worker is gone: this reads to EOF without blocking
                pipe.close()
        return status, err


def require_php_files(paths: Sequence[str], what: str) -> None:
    """Skip (fail under CI) unless every one of *paths* is on PHP's include_path (Debian's PHP libraries); *what* names the packages."""
    script = "foreach (array_slice($argv, 1) as $p) { if (!stream_resolve_include_path($p)) { exit; } } echo 'found';"
    found = subprocess.run(
        [php_cli(), "-r", script, "--", *paths], capture_output=True, timeout=DEADLINE, check=True
    ).stdout.decode()
    require_binary(found or None, what)


def ready_worker(script: Path) -> Iterator[PipeWorker]:
    """A worker running *script*, past its pid handshake; killed when done (a fixture's body)."""
    w = PipeWorker(script)
    try:
        assert w.handshake() == [WorkerReady(w.proc.pid)]
        yield w
    finally:
        w.close()


def context(
    path: str,
    *,
    method: str = "GET",
    query: str = "",
    headers: tuple[tuple[bytes, bytes], ...] = (),
    cookies: Optional[Mapping[str, str]] = None,
    uploads: Optional[Mapping[str, UploadTree]] = None,
    parsed: bool = False,
) -> bytes:
    """The request context of *path* on http://app.test:8080 from 192.0.2.7, with request id req-42."""
    return encode_request_context(
        method=method,
        uri=f"http://app.test:8080{path}" + (f"?{query}" if query else ""),
        headers=headers,
        remote_addr="192.0.2.7",
        raw_query=query,
        cookies=cookies or {},
        uploads=uploads,
        attributes={"requestId": "req-42"},
        parsed=parsed,
    )
