"""`dq` under a pseudo-terminal of a chosen size, and the screen it leaves.

`PtySession` starts `dq ARGS` with a new pty as its controlling terminal (stdin, stdout and
stderr all on it, the window size set with TIOCSWINSZ), so the command sees a real terminal:
`isatty()`, the window size, and Ctrl-C written as `\\x03` reaching it as SIGINT through the
terminal driver. `Screen` is a small terminal emulator for what rich and click write (text,
CR/LF, cursor up/down/column, erase line/display; colours ignored), so tests assert on the
lines a person would see, not on the stream of redraws.
"""

from __future__ import annotations

import codecs
import fcntl
import os
import re
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Mapping

from tests.helpers import DQ, ROOT, wait_until

# Settings of the test runner's own terminal that would change what the command draws.
TERMINAL_VARIABLES = ("COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "TERM")
CSI = re.compile(r"\x1b\[([0-9;?]*)([@-~])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[=>78]")


class Screen:
    """Lines as a terminal shows them; scrollback kept (every line ever written stays readable)."""

    def __init__(self) -> None:
        self.lines: list[list[str]] = [[]]
        self.row = 0
        self.col = 0

    def _put(self, char: str) -> None:
        line = self.lines[self.row]
        line.extend(" " * (self.col - len(line)))
        if self.col < len(line):
            line[self.col] = char
        else:
            line.append(char)
        self.col += 1

    def _down(self, count: int = 1) -> None:
        self.row += count
        while len(self.lines) <= self.row:
            self.lines.append([])

    def feed(self, data: str) -> None:
        position = 0
        while position < len(data):
            match = CSI.match(data, position)
            if match:
                self._control(match.group(1) or "", match.group(2) or "")
                position = match.end()
                continue
            char = data[position]
            position += 1
            if char == "\r":
                self.col = 0
            elif char == "\n":
                self._down()
            elif char == "\b":
                self.col = max(0, self.col - 1)
            elif char >= " " or char == "\t":
                self._put(char)

    def _control(self, params: str, final: str) -> None:
        if params.startswith("?") or final in "mhl":
            return  # modes (cursor shown/hidden) and colours
        numbers = [int(part) if part else 0 for part in params.split(";")] if params else []
        count = max(1, numbers[0]) if numbers else 1
        if final in "AF":
            self.row = max(0, self.row - count)
            self.col = 0 if final == "F" else self.col
        elif final in "BE":
            self._down(count)
            self.col = 0 if final == "E" else self.col
        elif final == "C":
            self.col += count
        elif final == "D":
            self.col = max(0, self.col - count)
        elif final == "G":
            self.col = count - 1
        elif final == "K":
            mode = numbers[0] if numbers else 0
            line = self.lines[self.row]
            if mode == 0:
                del line[self.col :]
            elif mode == 1:
                line[: self.col] = [" "] * min(self.col, len(line))
            else:
                line.clear()
        elif final == "J" and (numbers[0] if numbers else 0) == 0:
            del self.lines[self.row][self.col :]
            del self.lines[self.row + 1 :]

    def text(self) -> str:
        return "\n".join("".join(line).rstrip() for line in self.lines).rstrip("\n")


class PtySession:
    """`dq ARGS` on a pty of `cols` x `rows`; read it with `screen()`, type with `write()`."""

    def __init__(self, args: list[str], env: Mapping[str, str], *, cols: int = 80, rows: int = 24) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        environment = {key: value for key, value in env.items() if key not in TERMINAL_VARIABLES}
        environment["TERM"] = "xterm-256color"
        self.process = subprocess.Popen(
            [DQ, *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=environment,
            cwd=ROOT,
            start_new_session=True,
            preexec_fn=_take_controlling_terminal,  # only an ioctl: safe before exec
        )
        os.close(slave)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._screen = Screen()
        self._raw: list[str] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: every writer of the pty has gone
                break
            if not chunk:
                break
            text = self._decoder.decode(chunk)
            with self._lock:
                self._raw.append(text)
                self._screen.feed(text)

    def screen(self) -> str:
        with self._lock:
            return self._screen.text()

    def raw(self) -> str:
        with self._lock:
            return "".join(self._raw)

    def wait_for(self, predicate_or_text: str | object, timeout: float) -> bool:
        if isinstance(predicate_or_text, str):
            return wait_until(lambda: predicate_or_text in self.screen(), timeout, interval=0.1)
        return wait_until(predicate_or_text, timeout, interval=0.1)  # type: ignore[arg-type]

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def wait(self, timeout: float) -> int:
        code = self.process.wait(timeout)
        self._reader.join(5)
        return code

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._reader.join(5)
        os.close(self.master)

    def __enter__(self) -> PtySession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _take_controlling_terminal() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def run_in_pty(
    args: list[str], env: Mapping[str, str], *, cols: int = 80, rows: int = 24, timeout: float = 30
) -> tuple[int, str]:
    """Run `dq ARGS` to its end on a pty; its exit code and the screen it left."""
    with PtySession(args, env, cols=cols, rows=rows) as session:
        code = session.wait(timeout)
        deadline = time.monotonic() + 2
        while session._reader.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        return code, session.screen()
