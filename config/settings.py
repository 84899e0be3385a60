"""Settings: the only place that reads the environment.

Every command parses the settings it uses once, at start, with `Settings.from_env()`.
A bad value raises `SettingsError` naming the variable; the CLI turns that into exit 2.
Nothing is ever silently replaced by a default.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

SOCKET_NAME = "redis.sock"
LOG_FORMATS = ("text", "json")


class SettingsError(ValueError):
    """A setting has a value we refuse; the message names the variable."""


def _number(env: Mapping[str, str], name: str, default: float, *, integer: bool, minimum: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise SettingsError(f"{name} must be {kind}, got {raw!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise SettingsError(f"{name} must be a finite number, got {raw!r}")
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum:g}, got {raw!r}")
    return value


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be 0 or 1, got {raw!r}")


def _delays(env: Mapping[str, str], name: str, default: tuple[float, ...]) -> tuple[float, ...]:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    values = []
    for piece in raw.split(","):
        try:
            value = float(piece)
        except ValueError:
            raise SettingsError(f"{name} must be seconds separated by commas (like 1,2,5,10), got {raw!r}") from None
        if value != value or value in (float("inf"), float("-inf")) or value < 0:
            raise SettingsError(f"{name} must list finite seconds of at least 0, got {raw!r}")
        values.append(value)
    return tuple(values)


def _text(env: Mapping[str, str], name: str, default: str | None) -> str | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    return raw


def _credential(env: Mapping[str, str], name: str) -> str | None:
    value = _text(env, name, None)
    if value is not None and value.strip() == "":
        raise SettingsError(f"{name} must not be blank")
    return value


def _host_names(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return ()
    names = tuple(piece.strip().lower() for piece in raw.split(","))
    for piece in names:
        if not piece or any(ch.isspace() or ch in "/@\\" for ch in piece):
            raise SettingsError(f"{name} must be host names (or host:port) separated by commas, got {raw!r}")
    return names


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Settings:
    redis_url: str | None = None
    queue_name: str = "downloads"
    download_dir: Path = Path("downloads")
    state_dir: Path = Path("var")
    workers: int = 4
    job_timeout: int = 300
    request_timeout: float = 30
    cleanup_interval: float = 2
    shutdown_grace: float = 300
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = 9181
    dashboard_username: str | None = None
    dashboard_password: str | None = None
    allow_private_networks: bool = False
    retries: int = 3  # a job gets up to 1 + retries attempts
    retry_delays: tuple[float, ...] = (1, 2, 5, 10)  # the n-th retry waits the n-th value, the last repeats
    retry_after_max: float = 300  # a server's Retry-After is honoured up to this
    min_free_mb: float = 100  # free space a download must leave on the disk
    max_file_mb: float = 0  # 0: no cap on one file's size
    # Host header values the dashboard answers; empty: the bind address, localhost, 127.0.0.1
    dashboard_allowed_hosts: tuple[str, ...] = ()
    api_token: str | None = None  # `Authorization: Bearer <token>` for scripts, beside basic auth
    api_max_body: int = 65536  # bytes: a bigger API request body is refused with 413
    api_rate: int = 120  # API requests a minute from one client address; more get 429
    queue_warn: int = 1000  # queued jobs above which every enqueue answer carries a warning
    queue_max: int = 10000  # an enqueue that would queue more than this is refused whole
    log_format: str = "text"  # "text" or "json" (one object a line)
    keep_completed: int = 86400  # seconds a completed job (and album, and its events) stays listed
    keep_failed: int = 604800  # seconds a failed one does

    @property
    def max_attempts(self) -> int:
        return 1 + self.retries

    @property
    def min_free_bytes(self) -> int:
        return int(self.min_free_mb * 1_000_000)

    @property
    def max_file_bytes(self) -> int | None:
        return int(self.max_file_mb * 1_000_000) if self.max_file_mb > 0 else None

    @property
    def allowed_hosts(self) -> frozenset[str]:
        """Every `Host` header the dashboard accepts: a name alone means it at the dashboard's port
        (and without a port, as a reverse proxy on 80/443 sends it)."""
        names = self.dashboard_allowed_hosts or (self.dashboard_host.lower(), "localhost", "127.0.0.1")
        accepted: set[str] = set()
        for name in names:
            host, colon, port = name.rpartition(":")
            if colon and port.isdigit() and not name.endswith("]") and (host.count(":") == 0 or host.endswith("]")):
                accepted.add(name)
                continue
            bare = f"[{name}]" if ":" in name and not name.startswith("[") else name
            accepted.update({bare, f"{bare}:{self.dashboard_port}"})
        return frozenset(accepted)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        redis_url = _text(env, "REDIS_URL", None)
        if redis_url is not None and not redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise SettingsError(f"REDIS_URL must start with redis://, rediss:// or unix://, got {redis_url!r}")
        queue_name = _text(env, "DQ_QUEUE", "downloads") or "downloads"
        if not queue_name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise SettingsError(f"DQ_QUEUE must be letters, digits, '-', '_' or '.', got {queue_name!r}")
        username = _credential(env, "DQ_DASHBOARD_USERNAME")
        password = _credential(env, "DQ_DASHBOARD_PASSWORD")
        if (username is None) != (password is None):
            raise SettingsError("DQ_DASHBOARD_USERNAME and DQ_DASHBOARD_PASSWORD must be set together")
        host = _text(env, "DQ_DASHBOARD_HOST", "127.0.0.1") or "127.0.0.1"
        log_format = (_text(env, "DQ_LOG_FORMAT", "text") or "text").strip().lower()
        if log_format not in LOG_FORMATS:
            raise SettingsError(f"DQ_LOG_FORMAT must be text or json, got {env['DQ_LOG_FORMAT']!r}")
        queue_warn = int(_number(env, "DQ_QUEUE_WARN", 1000, integer=True, minimum=0))
        queue_max = int(_number(env, "DQ_QUEUE_MAX", 10000, integer=True, minimum=1))
        return cls(
            redis_url=redis_url,
            queue_name=queue_name,
            download_dir=Path(_text(env, "DQ_DOWNLOAD_DIR", "downloads") or "downloads").absolute(),
            state_dir=Path(_text(env, "DQ_STATE_DIR", "var") or "var").absolute(),
            workers=int(_number(env, "DQ_WORKERS", 4, integer=True, minimum=1)),
            job_timeout=int(_number(env, "DQ_JOB_TIMEOUT", 300, integer=True, minimum=1)),
            request_timeout=_number(env, "DQ_REQUEST_TIMEOUT", 30, integer=False, minimum=0.1),
            cleanup_interval=_number(env, "DQ_CLEANUP_INTERVAL", 2, integer=False, minimum=0.1),
            shutdown_grace=_number(env, "DQ_SHUTDOWN_GRACE", 300, integer=False, minimum=0),
            dashboard_host=host,
            dashboard_port=int(_number(env, "DQ_DASHBOARD_PORT", 9181, integer=True, minimum=1)),
            dashboard_username=username,
            dashboard_password=password,
            allow_private_networks=_flag(env, "DQ_ALLOW_PRIVATE_NETWORKS", False),
            retries=int(_number(env, "DQ_RETRIES", 3, integer=True, minimum=0)),
            retry_delays=_delays(env, "DQ_RETRY_DELAYS", (1, 2, 5, 10)),
            retry_after_max=_number(env, "DQ_RETRY_AFTER_MAX", 300, integer=False, minimum=0),
            min_free_mb=_number(env, "DQ_MIN_FREE_MB", 100, integer=False, minimum=0),
            max_file_mb=_number(env, "DQ_MAX_FILE_MB", 0, integer=False, minimum=0),
            dashboard_allowed_hosts=_host_names(env, "DQ_DASHBOARD_ALLOWED_HOSTS"),
            api_token=_credential(env, "DQ_API_TOKEN"),
            api_max_body=int(_number(env, "DQ_API_MAX_BODY", 65536, integer=True, minimum=1)),
            api_rate=int(_number(env, "DQ_API_RATE", 120, integer=True, minimum=1)),
            queue_warn=queue_warn,
            queue_max=queue_max,
            log_format=log_format,
            keep_completed=int(_number(env, "DQ_KEEP_COMPLETED", 86400, integer=True, minimum=1)),
            keep_failed=int(_number(env, "DQ_KEEP_FAILED", 604800, integer=True, minimum=1)),
        )

    @property
    def embedded_redis(self) -> bool:
        """True when `bin/up` runs its own Redis (REDIS_URL unset)."""
        return self.redis_url is None

    @property
    def redis_socket(self) -> Path:
        return self.state_dir / SOCKET_NAME

    @property
    def effective_redis_url(self) -> str:
        return self.redis_url or f"unix://{self.redis_socket}"

    @property
    def dashboard_auth(self) -> tuple[str, str] | None:
        if self.dashboard_username is None or self.dashboard_password is None:
            return None
        return (self.dashboard_username, self.dashboard_password)

    def check_dashboard_bind(self) -> None:
        """Refuse to serve the dashboard without credentials on anything but loopback."""
        if self.dashboard_auth is None and not is_loopback_host(self.dashboard_host):
            raise SettingsError(
                f"DQ_DASHBOARD_HOST={self.dashboard_host} is not a loopback address: set "
                "DQ_DASHBOARD_USERNAME and DQ_DASHBOARD_PASSWORD to serve the dashboard beyond this machine"
            )
        if self.dashboard_port > 65535:
            raise SettingsError(f"DQ_DASHBOARD_PORT must be at most 65535, got {self.dashboard_port}")
