"""The benchmark's servers and files: the system tools it drives, nginx (HTTP, HTTPS with a
self-signed certificate, a rate-limited location), the files it serves, and its Redis."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from jobs.workers import set_parent_death_signal
from tests.bench_proc import BenchError, MiB, free_port, terminate

# command → the Debian package that ships it (the same list is in bin/_packages)
TOOLS = {"nginx": "nginx", "aria2c": "aria2", "curl": "curl", "openssl": "openssl"}
SBIN = ("/usr/sbin", "/sbin", "/usr/local/sbin")  # nginx lives here, often off a user's PATH
TINY_BYTES = 1024
SLOW_RATE = "10k"  # nginx limit_rate of /slow/: a download that is still running when killed


def find_tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for directory in SBIN:
        candidate = Path(directory) / name
        if os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def ensure_tools() -> dict[str, str]:
    """Path of every tool, installing the missing ones from Debian's packages when root with apt-get."""
    missing = sorted({TOOLS[name] for name in TOOLS if find_tool(name) is None})
    if missing:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            packages = " ".join(missing)
            raise BenchError(f"the benchmark needs {packages}; install them with: sudo apt-get install -y {packages}")
        print(f"installing system packages: {' '.join(missing)}", file=sys.stderr, flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "--no-install-recommends"]):
            args = command + (missing if "install" in command else [])
            if subprocess.run(args, env=env, stdout=subprocess.DEVNULL).returncode != 0:
                raise BenchError(f"{' '.join(args)} failed")
    tools = {name: find_tool(name) for name in TOOLS}
    absent = [name for name, path in tools.items() if path is None]
    if absent:
        raise BenchError(f"still missing after installing: {', '.join(absent)}")
    return {name: path for name, path in tools.items() if path is not None}


def version_of(command: list[str]) -> str:
    run = subprocess.run(command, capture_output=True, text=True)
    text = (run.stdout + run.stderr).strip().splitlines()
    return text[0] if text else "?"


# --- the files ---------------------------------------------------------------------------
def write_file(path: Path, size: int, seed: int, pool: bytes) -> None:
    """`size` random-ish bytes: slices of a random pool, each MiB at its own offset and tagged."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        written, chunk = 0, 0
        while written < size:
            start = (seed * 7919 + chunk * 104729) % (len(pool) - MiB)
            block = chunk.to_bytes(8, "little") + seed.to_bytes(8, "little") + pool[start : start + MiB - 16]
            block = block[: size - written]
            out.write(block)
            written += len(block)
            chunk += 1


def warm(path: Path) -> None:
    """Read the file once so the page cache holds it."""
    with open(path, "rb", buffering=0) as source:
        buffer = bytearray(4 * MiB)
        while source.readinto(buffer):
            pass


@dataclass
class Files:
    """What nginx serves: big/bigN.flac, grow/grow.flac, tiny/tNNNNN.flac, slow/slow.flac."""

    root: Path
    big_bytes: int
    big_count: int
    grow_bytes: int
    tiny_count: int
    big: list[str] = field(default_factory=list)  # URL paths
    tiny: list[str] = field(default_factory=list)
    grow: str = "/grow/grow.flac"
    slow: str = "/slow/slow.flac"

    def create(self) -> None:
        pool = os.urandom(16 * MiB)
        for index in range(1, self.big_count + 1):
            self.big.append(f"/big/big{index}.flac")
        for number, url_path in enumerate([*self.big, self.grow], start=1):
            size = self.grow_bytes if url_path == self.grow else self.big_bytes
            write_file(self.root / url_path.lstrip("/"), size, number, pool)
        write_file(self.root / self.slow.lstrip("/"), 4 * MiB, 99, pool)
        tiny_dir = self.root / "tiny"
        tiny_dir.mkdir(parents=True, exist_ok=True)
        for index in range(self.tiny_count):
            name = f"t{index:05d}.flac"
            start = (index * 131) % (len(pool) - TINY_BYTES)
            (tiny_dir / name).write_bytes(pool[start : start + TINY_BYTES])
            self.tiny.append(f"/tiny/{name}")
        for url_path in [*self.big, self.grow]:
            warm(self.root / url_path.lstrip("/"))


# --- nginx ----------------------------------------------------------------------------------
NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 2;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
{user}
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    default_type application/octet-stream;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{http_port};
        listen 127.0.0.1:{https_port} ssl;
        ssl_certificate {dir}/cert.pem;
        ssl_certificate_key {dir}/key.pem;
        root {root};
        location /slow/ {{ limit_rate {slow_rate}; }}
    }}
}}
"""


class Nginx:
    """nginx on two free loopback ports (HTTP and HTTPS), serving `root`, as the current user."""

    def __init__(self, binary: str, openssl: str, directory: Path, root: Path) -> None:
        self.binary, self.openssl, self.dir, self.root = binary, openssl, directory, root
        self.http_port = free_port()
        self.https_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def cert(self) -> Path:
        return self.dir / "cert.pem"

    def url(self, path: str, *, tls: bool = False) -> str:
        if tls:
            return f"https://127.0.0.1:{self.https_port}{path}"
        return f"http://127.0.0.1:{self.http_port}{path}"

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [self.openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
             "-keyout", str(self.dir / "key.pem"), "-out", str(self.cert)],
            check=True, capture_output=True,
        )  # fmt: skip
        conf = self.dir / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(
                dir=self.dir,
                root=self.root,
                user="user root;" if os.geteuid() == 0 else "",  # else workers drop to nobody
                http_port=self.http_port,
                https_port=self.https_port,
                slow_rate=SLOW_RATE,
            )
        )
        parent = os.getpid()
        with open(self.dir / "stderr.log", "wb") as stderr:
            self.process = subprocess.Popen(
                [self.binary, "-p", str(self.dir), "-c", str(conf), "-e", str(self.dir / "error.log")],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
                preexec_fn=lambda: set_parent_death_signal(parent, signal.SIGTERM),
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (self.dir / "error.log").read_text(errors="replace") if (self.dir / "error.log").exists() else ""
                raise BenchError(f"nginx exited with {self.process.returncode}: {log[-500:]}")
            if all(self._answers(port) for port in (self.http_port, self.https_port)):
                return
            time.sleep(0.05)
        raise BenchError("nginx did not answer within 10s")

    @staticmethod
    def _answers(port: int) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            terminate(self.process, 10)  # SIGTERM: nginx's fast shutdown
