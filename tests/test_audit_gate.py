"""`.ci/audit.py`, the dependency audit of .ci/run: a known vulnerability in the locked set
fails it; a vulnerability service that cannot be reached is reported as such (exit 3), never
as a clean audit. pip-audit is replaced by a stand-in that answers as pip-audit does with a
service that works, one that finds nothing (a mirror without per-release pages), or none."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

STAND_IN = """
import json, os, sys
args = sys.argv[1:]
service = args[args.index("--vulnerability-service") + 1]
mode = os.environ["STAND_IN_MODE"]
if "--no-deps" in args:  # the canary, asked for JSON
    if mode == "unreachable" or (mode == "osv-only" and service == "pypi"):
        dep = {"name": "jinja2", "skip_reason": "Dependency not found on PyPI"}
    else:
        dep = {"name": "jinja2", "version": "3.1.4", "vulns": [{"id": "GHSA-cpwx-vrp4-4pq7"}]}
    print(json.dumps({"dependencies": [dep], "fixes": []}))
    sys.exit(1 if "vulns" in dep else 0)
assert "--require-hashes" in args and "--strict" in args, args
print(f"audited {args[-1]} with {service}")
if mode == "vulnerable":
    print("Found 1 known vulnerability in 1 package")
    sys.exit(1)
print("No known vulnerabilities found")
"""


def audit(tmp_path: Path, mode: str) -> subprocess.CompletedProcess[str]:
    stand_in = tmp_path / "pip-audit"
    stand_in.write_text(f"#!{sys.executable}\n{STAND_IN}")
    stand_in.chmod(0o755)
    env = {**os.environ, "MAILER_PIP_AUDIT": str(stand_in), "STAND_IN_MODE": mode}
    return subprocess.run([sys.executable, ".ci/audit.py", "requirements.lock"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)


def test_a_known_vulnerability_in_the_lock_fails_the_audit(tmp_path):
    result = audit(tmp_path, "vulnerable")
    assert result.returncode == 1
    assert "audited requirements.lock with pypi" in result.stdout
    assert "Found 1 known vulnerability" in result.stdout


def test_a_clean_lock_passes(tmp_path):
    result = audit(tmp_path, "clean")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No known vulnerabilities found" in result.stdout


def test_the_next_service_is_asked_when_the_first_finds_not_even_the_canary(tmp_path):
    result = audit(tmp_path, "osv-only")
    assert result.returncode == 0
    assert "audited requirements.lock with osv" in result.stdout


def test_no_reachable_service_is_a_skip_that_says_so_never_a_clean_audit(tmp_path):
    result = audit(tmp_path, "unreachable")
    assert result.returncode == 3
    assert "SKIPPED, requirements.lock was NOT audited" in result.stdout
    assert "No known vulnerabilities" not in result.stdout
    assert "pypi: Dependency not found on PyPI" in result.stdout and "osv:" in result.stdout
