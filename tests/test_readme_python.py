"""The README's "use it from Python" example runs as written."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Use it from Python", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README has no python example under 'Use it from Python'"
    return match.group(1)


def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    script = tmp_path / "example.py"
    script.write_text(_python_example(), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(script), run_name="__main__")
    out = capsys.readouterr().out
    # the two EU customers closest to [1, 0, 0, 0]: c1 exactly, then c3
    assert out.index("'c1'") < out.index("'c3'")
    assert "'c2'" not in out.splitlines()[0]
    assert (tmp_path / "kindred-data").is_dir()
