"""Run a real ``tidings serve`` in a subprocess for a test, and stop it after."""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

_LISTEN = re.compile(r"listening on (http://\S+)")


class Served:
    """A running server process: its base URL and everything it printed so far."""

    def __init__(
        self,
        process: subprocess.Popen[str],
        url: str,
        lines: list[str],
        pump: threading.Thread,
        store: str = "",
    ) -> None:
        self.store = store
        self.process = process
        self.url = url
        self.lines = lines
        self.pump = pump

    @property
    def output(self) -> str:
        """What the server printed (stdout and stderr together)."""
        return "".join(self.lines)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        """Send ``sig`` and wait for the process to end; its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        finally:
            self.release()

    def release(self) -> None:
        """Once the process has ended: wait for its output and close the pipe."""
        if self.process.poll() is not None:
            self.pump.join(5)
            if self.process.stdout is not None:
                self.process.stdout.close()


def start_server(
    store: str, *args: str, env: dict[str, str] | None = None, port: int = 0
) -> Served:
    """Start ``tidings serve`` on ``store`` and wait until it listens."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tidings.cli",
            "serve",
            "--store",
            store,
            "--port",
            str(port),
            *list(args),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=Path(__file__).parent,
    )
    lines: list[str] = []
    found = threading.Event()
    url: list[str] = []

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            match = _LISTEN.search(line)
            if match and not url:
                url.append(match.group(1))
                found.set()
        found.set()

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    if not found.wait(30) or not url:
        process.kill()
        process.wait()
        thread.join(5)
        if process.stdout is not None:
            process.stdout.close()
        raise RuntimeError("tidings serve did not start:\n" + "".join(lines))
    return Served(process, url[0], lines, thread, store)


@contextmanager
def served(store: str, *args: str, env: dict[str, str] | None = None) -> Iterator[Served]:
    """A server on ``store`` for the length of the block."""
    server = start_server(store, *args, env=env)
    try:
        yield server
    finally:
        if server.process.poll() is None:
            server.process.send_signal(signal.SIGTERM)
            try:
                server.process.wait(20)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait()
        server.release()


class Spares:
    """Servers started ahead of need, one per backend, each on an empty store of its own.

    A contract test needs an empty store, so each gets a fresh server; starting the next
    one while the current test runs hides most of a server's start-up time.
    """

    def __init__(self, make_store: Callable[[str], str]) -> None:
        self._make_store = make_store
        self._next: dict[str, concurrent.futures.Future[Served]] = {}
        self._pool = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="spare-server")

    def _start(self, backend: str) -> concurrent.futures.Future[Served]:
        return self._pool.submit(lambda: start_server(self._make_store(backend)))

    def take(self, backend: str) -> Served:
        """A running server on an empty store of ``backend``; the next one starts now."""
        pending = self._next.pop(backend, None) or self._start(backend)
        self._next[backend] = self._start(backend)
        return pending.result(60)

    def close(self) -> None:
        """Stop the servers nobody took."""
        for pending in self._next.values():
            with contextlib.suppress(Exception):
                pending.result(60).stop()
        self._pool.shutdown()
