"""requirements.lock, the deployment's dependency set, matches setup.cfg: every requirement
is pinned within its floor, and every pin carries hashes."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)")


def requirements() -> list[Requirement]:
    """install_requires: what the lock is made from (`make lock`)."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = config["options"]["install_requires"].splitlines()
    return [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]


def pins() -> dict[str, tuple[str, int]]:
    """Each pinned name with its version and how many hashes it has."""
    found: dict[str, tuple[str, int]] = {}
    name = None
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        match = PIN.match(line)
        if match:
            name = canonicalize_name(match.group(1))
            found[name] = (match.group(2), found.get(name, ("", 0))[1])
        elif name and line.strip().startswith("--hash=sha256:"):
            version, hashes = found[name]
            found[name] = (version, hashes + 1)
    return found


def test_every_requirement_is_locked_at_a_version_its_floor_allows():
    locked = pins()
    for requirement in requirements():
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is not in requirements.lock: run `make lock`"
        version = locked[name][0]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{name}=={version} is outside {requirement.specifier}: run `make lock`")


def test_every_pin_carries_hashes():
    locked = pins()
    assert len(locked) > 20
    assert all(hashes for _version, hashes in locked.values()), [
        name for name, (_v, hashes) in locked.items() if not hashes]


def test_the_floors_admit_no_release_with_a_known_sandbox_escape():
    """The service runs templates in Jinja2's sandbox: 3.1.5 and older can be escaped."""
    floors = {canonicalize_name(r.name): r.specifier for r in requirements()}
    assert not floors["jinja2"].contains("3.1.5")
    assert floors["jinja2"].contains("3.1.6")
    assert not floors["cryptography"].contains("42.0.3")
