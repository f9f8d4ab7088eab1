"""Audit the locked dependency set (requirements.lock) for known vulnerabilities with
pip-audit, or say plainly that it could not be audited.

pip-audit asks a vulnerability service on the network (PyPI's JSON API, or OSV). Where that
service cannot be reached, pip-audit does not always fail: a PyPI mirror that lacks the
per-release JSON pages makes it skip every package and exit 0, which reads like a clean
audit. So a canary goes first: a release with known vulnerabilities must be reported, or the
service is taken as unreachable.

Exit status: pip-audit's (0 clean, 1 a known vulnerability, ...) when a service answered;
3 when none did (nothing was audited; .ci/run prints that and goes on).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

# Jinja2 3.1.4 has CVE-2024-56201, CVE-2024-56326 and CVE-2025-27516: every working
# service reports it.
CANARY = "jinja2==3.1.4"
SERVICES = ("pypi", "osv")
UNREACHABLE = 3
# The pip-audit beside this Python (the venv's); MAILER_PIP_AUDIT names another (the tests'
# stand-in for a vulnerability service, which this machine cannot reach).
PIP_AUDIT = os.environ.get("MAILER_PIP_AUDIT") or str(Path(sys.executable).with_name("pip-audit"))


def pip_audit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PIP_AUDIT, "--disable-pip", "--progress-spinner", "off", *args],
                          capture_output=True, text=True, timeout=600)


def why_not(service: str) -> str | None:
    """None when `service` reports the canary's vulnerabilities, else what went wrong."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as canary:
        canary.write(CANARY + "\n")
        canary.flush()
        result = pip_audit("--no-deps", "--vulnerability-service", service, "--format", "json",
                           "--requirement", canary.name)
    try:
        found = json.loads(result.stdout)["dependencies"][0]
    except (ValueError, KeyError, IndexError):
        lines = result.stderr.strip().splitlines()
        return lines[-1] if lines else f"pip-audit exited {result.returncode}"
    if found.get("vulns"):
        return None
    return found.get("skip_reason") or f"{CANARY} reported without its known vulnerabilities"


def main(lock: str) -> int:
    reasons = []
    for service in SERVICES:
        reason = why_not(service)
        if reason is None:
            print(f"pip-audit: auditing {lock} with the {service} vulnerability service")
            result = pip_audit("--require-hashes", "--strict", "--vulnerability-service", service,
                               "--requirement", lock)
            print(result.stdout, end="")
            print(result.stderr, end="", file=sys.stderr)
            return result.returncode
        reasons.append(f"{service}: {reason}")
    print(f"pip-audit: SKIPPED, {lock} was NOT audited: no vulnerability service answers "
          f"from this machine ({'; '.join(reasons)}). Run `make audit` where one does.")
    return UNREACHABLE


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1] if len(sys.argv) > 1 else "requirements.lock"))
