"""The whole demo's wall time: ``fixloop demo --approve-as reviewer --json`` (fixloop/app/demo.py) run ``--runs``
times (default 1) as a user runs it, on this machine.

    python bench/demo.py [--runs N] [--metrics datadog|prometheus]

The goal (issue 17; issue 20 for ``--metrics prometheus``, the real Prometheus and Alertmanager): every item
complete, the whole demo under 3 minutes on 2 cores. Output: per run a line on
stderr, and last on stdout one JSON object ``{"runs", "seconds": [per run, as the demo's summary reports it from
its start to the summary], "wall_seconds": [per run, the process from exec to exit], "max_seconds", "complete":
all runs complete, "under_3_minutes"}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> dict[str, object]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--metrics", choices=("datadog", "prometheus"), default="datadog")
    args = ap.parse_args(argv)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIXLOOP_")}
    seconds, wall, complete = [], [], []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            started = time.monotonic()
            done = subprocess.run(
                [sys.executable, "-m", "fixloop", "demo", "--approve-as", "reviewer", "--json"]
                + ["--metrics", args.metrics, "--state-dir", f"{tmp}/demo"],
                capture_output=True,
                text=True,
                cwd=ROOT,
                env=env,
                timeout=900,
            )
            wall.append(round(time.monotonic() - started, 1))
        if done.returncode != 0:
            print(f"run {i + 1}: exit {done.returncode}: {done.stderr[-500:]}", file=sys.stderr)
            complete.append(False)
            continue
        summary = json.loads(done.stdout)
        seconds.append(summary["seconds"])
        complete.append(bool(summary["complete"]))
        line = f"run {i + 1}: {summary['seconds']} s (wall {wall[-1]} s), complete {summary['complete']}"
        print(line, file=sys.stderr)
    top = max([*seconds, *wall], default=0.0)
    return {
        "runs": args.runs,
        "metrics": args.metrics,
        "seconds": seconds,
        "wall_seconds": wall,
        "max_seconds": top,
        "complete": all(complete) and len(seconds) == args.runs,
        "under_3_minutes": all(complete) and bool(wall) and max(wall) < 180,
    }


if __name__ == "__main__":
    from bench.common import report

    report(main())
