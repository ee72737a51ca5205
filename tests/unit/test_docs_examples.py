"""The README's and examples' code runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_python_examples_run(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    assert blocks, "the README has no python example"
    for block in blocks:
        expected = re.findall(r"^# expect: (.*)$", block, re.MULTILINE)
        assert expected, f"a README example says nothing of its output:\n{block[:200]}"
        result = subprocess.run(
            [sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        for line in expected:
            assert line in result.stdout, result.stdout


def test_the_quickstart_example_runs() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "conflict, as expected" in result.stdout
    assert "#3" in result.stdout and "by alice" in result.stdout
