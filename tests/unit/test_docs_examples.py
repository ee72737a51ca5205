"""The README's and examples' code runs as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_python_blocks(doc: Path, cwd: Path, env: dict[str, str] | None = None) -> None:
    """Run every python block of ``doc``; each must print its ``# expect:`` lines."""
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), re.DOTALL)
    assert blocks, f"{doc.name} has no python example"
    for block in blocks:
        expected = re.findall(r"^# expect: (.*)$", block, re.MULTILINE)
        assert expected, f"a {doc.name} example says nothing of its output:\n{block[:200]}"
        result = subprocess.run(
            [sys.executable, "-c", block],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=60,
            env=None if env is None else {**os.environ, **env},
        )
        assert result.returncode == 0, result.stderr
        for line in expected:
            assert line in result.stdout, result.stdout


def test_the_readme_python_examples_run(tmp_path: Path) -> None:
    run_python_blocks(ROOT / "README.md", tmp_path)


def test_the_typed_events_guide_examples_run(tmp_path: Path) -> None:
    run_python_blocks(ROOT / "docs" / "types.md", tmp_path)


def test_the_eventsourcing_guide_example_runs(tmp_path: Path) -> None:
    run_python_blocks(ROOT / "docs" / "eventsourcing.md", tmp_path)


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


def test_the_satellites_guide_example_runs(tmp_path: Path) -> None:
    from tests.served import served

    with served(f"sqlite:///{tmp_path / 'server.db'}") as server:
        env = {"TIDINGS_SERVER": server.url}
        run_python_blocks(ROOT / "docs" / "satellites.md", tmp_path, env)
