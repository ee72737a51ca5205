"""Child process that makes one measurement: ``python bench/measure.py REQUEST_JSON RESULT_PATH``.

``run.py`` starts one of these per measurement so that each library runs in a fresh
interpreter (no threads, pools, caches or garbage left over from the other side) and a
crash or hang in one measurement cannot take the whole benchmark down. The request
holds a :class:`workloads.Spec`, the PostgreSQL connection settings and the number of
runs (used by ``read_all``, which times several reads of one pre-load); the result is a
JSON list of measurements.
"""

from __future__ import annotations

import importlib
import json
import sys
from dataclasses import asdict
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "src"))  # benchmark the working tree's tidings

from workloads import Spec  # noqa: E402

SIDES = {"tidings": "subject_tidings", "eventsourcing": "peer_eventsourcing"}


def main(request_json: str, result_path: str) -> None:
    request = json.loads(request_json)
    spec = Spec(**request["spec"])
    # Import only the side measured: a broken tidings must not stop the eventsourcing runs.
    side = importlib.import_module(SIDES[spec.library])
    measurements = side.run(spec, request["pg"], request["runs"])
    Path(result_path).write_text(json.dumps([asdict(m) for m in measurements]))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
