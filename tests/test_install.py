"""Installs: `bin/up` (like every bin/ command but `bin/test`) puts only the runtime dependencies
into .venv, `bin/test` adds the test extra, and both install exactly constraints.txt's pins."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
CONSTRAINTS = ROOT / "constraints.txt"
TEST_TOOLS = ("pytest", "pytest-timeout", "playwright", "mypy", "ruff", "fakeredis", "types-requests")
VENV_TOOLING = {"pip", "setuptools", "wheel", "download-queue"}  # what no constraint pins
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)$")


def pins() -> dict[str, str]:
    pinned: dict[str, str] = {}
    for number, line in enumerate(CONSTRAINTS.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        match = PIN.match(line)
        assert match, f"constraints.txt line {number} is not name==version: {line!r}"
        pinned[canonicalize_name(match[1])] = match[2]
    return pinned


def project_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(text) for text in project["dependencies"] + project["optional-dependencies"]["test"]]


def test_constraints_pin_every_dependency_within_pyproject_and_rq_to_3_0() -> None:
    pinned = pins()
    for requirement in project_requirements():
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{name} is not pinned in constraints.txt"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"constraints.txt pins {name}=={pinned[name]}, outside pyproject's {requirement}"
        )
    assert Version(pinned["rq"]).release[:2] == (3, 0)
    (rq,) = [r for r in project_requirements() if r.name == "rq"]
    assert rq.specifier.contains("3.0.0") and not rq.specifier.contains("3.1.0")
    assert not (set(pinned) & VENV_TOOLING), "the project, pip and setuptools are not pinned"


def test_bin_test_alone_asks_for_the_test_extra() -> None:
    setting = re.compile(r"^DQ_VENV_EXTRAS=test\b", re.MULTILINE)
    assert setting.search((ROOT / "bin" / "test").read_text())
    for script in (ROOT / "bin").iterdir():
        if script.name != "test":
            assert not setting.search(script.read_text()), script


def copy_checkout(destination: Path) -> None:
    """The files a fresh clone would have, in their working-tree versions (uncommitted edits too)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = ROOT / name
        if source.is_file():  # not deleted in the working tree
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def install_env() -> dict[str, str]:
    """This environment as a shell on a fresh clone has it: no DQ_ settings, not inside our .venv."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DQ_", "PYTHON", "VIRTUAL_ENV")) and key != "REDIS_URL"
    }
    our_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != our_bin)
    return env


def installed(venv: Path) -> dict[str, str]:
    listed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {canonicalize_name(package["name"]): package["version"] for package in json.loads(listed)}


def assert_all_pinned(packages: dict[str, str]) -> None:
    pinned = pins()
    unpinned = sorted(name for name in packages if name not in pinned and name not in VENV_TOOLING)
    assert not unpinned, f"installed without a pin in constraints.txt: {unpinned}"
    other = {
        name: (version, pinned[name]) for name, version in packages.items() if pinned.get(name, version) != version
    }
    assert not other, f"installed (version, pin) differ: {other}"


def run(command: list[str], clone: Path, env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = subprocess.run(command, cwd=clone, env=env, capture_output=True, text=True, timeout=300)
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    return result, seconds


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_fresh_clone_bin_up_installs_runtime_only_and_bin_test_adds_the_test_extra(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    copy_checkout(clone)
    env = install_env()
    venv = clone / ".venv"

    # bin/up on a fresh clone (--help: the install, without starting Redis or workers).
    result, up_seconds = run([str(clone / "bin" / "up"), "--help"], clone, env)
    assert "setting up" in result.stderr
    assert "Run everything in the foreground" in result.stdout
    packages = installed(venv)
    assert not [tool for tool in TEST_TOOLS if tool in packages], sorted(packages)
    assert not [tool for tool in ("pytest", "playwright", "mypy", "ruff") if (venv / "bin" / tool).exists()]
    for name in ("rq", "redis", "requests"):
        assert packages[name] == pins()[name]
    assert_all_pinned(packages)
    assert (venv / ".installed").exists() and not (venv / ".installed-test").exists()

    # bin/test's install (what it sources, without running the suite): the test extra joins, pinned too.
    result, test_seconds = run(["bash", "-c", "DQ_VENV_EXTRAS=test; source bin/_venv"], clone, env)
    assert "setting up" in result.stderr
    packages = installed(venv)
    assert {tool: packages.get(tool) for tool in TEST_TOOLS} == {tool: pins()[tool] for tool in TEST_TOOLS}
    assert_all_pinned(packages)

    # Nothing to do after that: neither bin/up nor bin/test installs again.
    for command in ([str(clone / "bin" / "up"), "--help"], ["bash", "-c", "DQ_VENV_EXTRAS=test; source bin/_venv"]):
        result, _ = run(command, clone, env)
        assert "setting up" not in result.stderr
    print(f"\ninstall times: runtime {up_seconds:.1f} s, test extra added {test_seconds:.1f} s")
