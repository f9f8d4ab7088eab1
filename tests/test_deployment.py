"""The deployment files run exactly the README's commands (*Deploying*): compose.yaml's
migration, web and worker, the systemd units, and the Dockerfile's default command.

Images cannot be built on the project's machines (no registry of base images), so these
files are checked by reading them; the commands themselves are the README's."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> dict[str, list[str]]:
    """The service's commands in the first shell block of the README's *Deploying*, by role:
    `migrate`, `web`, `worker` (each as its argument list, comments dropped)."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Deploying\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    commands = [shlex.split(line, comments=True) for line in block.splitlines()]
    commands = [argv for argv in commands if argv and argv[0] in ("flask", "gunicorn")]
    roles = {
        "migrate": [argv for argv in commands if argv[-2:] == ["db", "upgrade"]],
        "web": [argv for argv in commands if argv[0] == "gunicorn"],
        "worker": [argv for argv in commands if argv[-2:] == ["mailer", "worker"]],
    }
    assert all(len(found) == 1 for found in roles.values()), roles
    return {role: found[0] for role, found in roles.items()}


def unit_commands(name: str) -> dict[str, list[str]]:
    """A systemd unit's ExecStartPre/ExecStart lines, argv[0] reduced to its file name."""
    found: dict[str, list[str]] = {}
    for line in (ROOT / "deploy" / "systemd" / name).read_text().splitlines():
        key, _, value = line.partition("=")
        if key in ("ExecStartPre", "ExecStart"):
            argv = shlex.split(value)
            assert argv[0].startswith("/opt/mailer/.venv/bin/"), argv  # systemd wants a path
            found[key] = [Path(argv[0]).name, *argv[1:]]
    return found


def in_a_container(argv: list[str]) -> list[str]:
    """The README's command as a container runs it: gunicorn binds every interface of the
    container (127.0.0.1 there would be the container's own loopback, out of reach), and
    compose publishes the port on the host's loopback only."""
    return ["0.0.0.0:8000" if arg == "127.0.0.1:8000" else arg for arg in argv]


def test_the_readme_names_one_command_for_each_role():
    commands = readme_commands()
    assert commands["migrate"] == ["flask", "--app", "wsgi", "db", "upgrade"]
    assert commands["web"][-1] == "wsgi:app"


def test_compose_runs_the_readme_s_commands_and_the_services_it_needs():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    commands = readme_commands()
    for role in ("migrate", "web", "worker"):
        assert services[role]["command"] == in_a_container(commands[role]), role
        assert services[role]["environment"]["MAILER_ENV"] == "production"
        assert services[role]["environment"]["MAILER_DATABASE_URL"].startswith(
            "postgresql+psycopg://")
    assert services["db"]["image"].startswith("postgres:")
    assert services["redis"]["image"].startswith("redis:")
    assert services["web"]["environment"]["MAILER_RATELIMIT_STORAGE_URL"].startswith("redis://")
    # The migration runs once, to its end, before the web and the worker start.
    assert services["migrate"]["restart"] == "no"
    for role in ("web", "worker"):
        assert services[role]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"}
    assert services["migrate"]["depends_on"]["db"] == {"condition": "service_healthy"}
    assert services["web"]["ports"] == ["127.0.0.1:8000:8000"]


def test_the_systemd_units_run_the_readme_s_commands():
    commands = readme_commands()
    web = unit_commands("mailer-web.service")
    worker = unit_commands("mailer-worker.service")
    assert web == {"ExecStartPre": commands["migrate"], "ExecStart": commands["web"]}
    assert worker == {"ExecStart": commands["worker"]}


def test_the_image_runs_as_a_user_installs_the_lock_and_serves_with_the_readme_s_command():
    dockerfile = (ROOT / "Dockerfile").read_text()
    instructions = [line for line in dockerfile.splitlines()
                    if line and not line.startswith((" ", "#"))]
    base = next(line for line in instructions if line.startswith("FROM "))
    assert re.fullmatch(r"FROM python:3\.\d+-slim", base), base
    assert "pip install --require-hashes -r requirements.lock" in dockerfile
    user = [line.split()[1] for line in instructions if line.startswith("USER ")]
    assert user and user[-1] not in ("root", "0")
    cmd = next(line for line in instructions if line.startswith("CMD "))
    assert yaml.safe_load(cmd.removeprefix("CMD ")) == in_a_container(readme_commands()["web"])
