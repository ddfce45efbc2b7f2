"""The CLI as the service tests invoke it: in-process through click's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from services.cli import main

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, store: Path | str | None = None, ok: bool = True) -> tuple[int, str, str]:
    """Invoke the CLI in-process; returns (exit code, stdout, stderr)."""
    argv = [*(["--store", str(store)] if store is not None else []), *args]
    res = CliRunner().invoke(main, argv, catch_exceptions=False)
    if ok:
        assert res.exit_code == 0, f"{argv}: {res.stdout}\n{res.stderr}"
    return res.exit_code, res.stdout, res.stderr


def run_json(*args: str, store: Path | str | None = None) -> object:
    _, out, _ = run("--json", *args, store=store)
    return json.loads(out)
