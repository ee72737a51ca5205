"""``python -m tidings.cli``: the same as the ``tidings`` console script."""

from __future__ import annotations

from tidings.cli import main

main()
