"""llama.cpp's ``llama-server``, started on 127.0.0.1 for a session and stopped at its end, whatever happens.

The server gets the model, the threads and ``slots`` parallel slots (``-np``, continuous batching on by
default), a context of ``ctx_per_slot`` tokens per slot, and a free port. It is started with
``PR_SET_PDEATHSIG`` (Linux): if pytest dies, even by SIGKILL, the kernel stops the server too; a normal
end, a failed test or Ctrl-C stop it through :meth:`LlamaServer.stop` (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

from pytest_axion.children import die_with_parent
from pytest_axion.credentials import Secret
from pytest_axion.errors import AxionError
from pytest_axion.options import DEFAULT_SERVE_CTX

HEALTH_TIMEOUT_S = 120.0
LOG_LINES_QUOTED = 3
PORT_TRIES = 3   # another process can take the free port picked before llama-server binds it
STOP_GRACE_S = 2.0   # for the requests in flight, before the second signal that ends llama-server at once


class ServerError(AxionError):
    """llama-server could not be started, or stopped answering."""


class PortTaken(ServerError):
    """llama-server could not bind its port: another process took it first."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class LlamaServer:
    """One llama-server process serving ``model`` with ``slots`` parallel slots."""

    def __init__(self, binary: Path, model: str, *, threads: int, slots: int, ctx_per_slot: int = DEFAULT_SERVE_CTX,
                 host: str = "127.0.0.1", extra_args: tuple[str, ...] = ()) -> None:
        self.binary, self.model, self.threads, self.slots = binary, model, threads, slots
        self.ctx_per_slot, self.host, self.extra_args = ctx_per_slot, host, extra_args
        self.port = 0
        # Its own random key, so that no other local user's process can use (or measure against) this server;
        # passed in the environment, not on the command line that every user can read in ps.
        self.api_key = Secret(secrets.token_urlsafe(24), "the server started here")
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def command(self) -> list[str]:
        return [str(self.binary), "-m", self.model, "-t", str(self.threads), "-tb", str(self.threads),
                "-np", str(self.slots), "-c", str(self.slots * self.ctx_per_slot), "--host", self.host,
                "--port", str(self.port), "--alias", Path(self.model).stem, "--no-webui", *self.extra_args]

    def start(self) -> LlamaServer:
        keep_port = bool(self.port)   # a restart keeps its port: clients hold the URL
        for attempt in range(1, PORT_TRIES + 1):
            self.port = self.port if keep_port else free_port(self.host)
            try:
                self._launch()
                return self
            except PortTaken:
                if attempt == PORT_TRIES:
                    raise
                if keep_port:
                    time.sleep(1.0)   # the old process's socket may linger a moment
        raise AssertionError("unreachable")

    def _launch(self) -> None:
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop())
        env = {**os.environ, "LLAMA_API_KEY": self.api_key.value}
        self._process = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=self._log,
                                         stderr=subprocess.STDOUT, env=env, preexec_fn=die_with_parent)
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise

    def _log_tail(self) -> str:
        if self._log is None:
            return "no log"
        self._log.seek(0)
        lines = [line.strip() for line in self._log.read().decode("utf-8", "replace").splitlines() if line.strip()]
        return " | ".join(lines[-LOG_LINES_QUOTED:]) or "no log output"

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        health = f"http://{self.host}:{self.port}/health"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))   # loopback: no proxy
        while time.monotonic() < deadline:
            assert self._process is not None
            code = self._process.poll()
            if code is not None:
                tail = self._log_tail()
                if "bind" in tail.lower() or "address already in use" in tail.lower():
                    raise PortTaken(f"llama-server could not bind port {self.port}: {tail}")
                raise ServerError(f"llama-server exited with code {code} while loading {self.model}: {tail}")
            try:
                with opener.open(health, timeout=2) as response:
                    if response.status == 200 and json.loads(response.read()).get("status") == "ok":
                        return
            except (urllib.error.URLError, OSError, ValueError):
                pass  # still loading (503) or not listening yet
            time.sleep(0.2)
        tail = self._log_tail()
        raise ServerError(f"llama-server did not become healthy within {HEALTH_TIMEOUT_S:.0f} s serving {self.model}: "
                          f"{tail}")

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            # llama-server finishes the requests in flight first (after a Ctrl-C the abandoned client's streams
            # kept it 10 s); a second signal ends it at once, and nothing of ours is left to finish
            for signal_number, wait_s in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGTERM, 5.0),
                                          (signal.SIGKILL, None)):
                process.send_signal(signal_number)
                try:
                    process.wait(timeout=wait_s)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def pids_of(binary_name: str = "llama-server") -> list[int]:
    """PIDs of running processes whose executable is ``binary_name`` (for tests that nothing was left behind)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                target = os.readlink(f"/proc/{entry}/exe")
            except OSError:
                continue
            if os.path.basename(target) == binary_name:
                found.append(int(entry))
    return found
