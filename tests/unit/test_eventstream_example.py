"""The event-stream example (docs/eventstreams.md) runs as written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_eventstream_webhook_example_runs() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "eventstream_webhook.py")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "received 3 events in order, signatures valid" in result.stdout
