"""Ingest throughput on the largest real reports.

Measures, over the largest scanner reports bundled in ``tests/fixtures`` (each file read into memory first),
the time ``fixloop.app.ingest`` takes to decode, detect and parse them into signals, against a bare ``json.loads``
of the same bytes. Each figure is the median of ``--rounds`` rounds (default 25).

Goal (issue 2): ``ratio_to_json_loads`` at most 4.
Last line: ``{"findings_per_s": ..., "ratio_to_json_loads": ...}`` plus the details.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import FIXTURES, ROOT, report  # noqa: E402
from fixloop.app.ingest import decode, parse_document  # noqa: E402
from fixloop.core.parsing import cvss_vector_score, version_key  # noqa: E402

SCANNERS = ("trivy", "grype", "snyk", "gitlab", "osv-scanner", "pip-audit")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=6, help="how many of the largest reports (default 6)")
    ap.add_argument("--rounds", type=int, default=25)
    args = ap.parse_args()

    reports = sorted(
        (p for d in SCANNERS for p in (FIXTURES / d).glob("*.json")), key=lambda p: p.stat().st_size, reverse=True
    )[: args.files]
    blobs = [(str(p.relative_to(ROOT)), p.read_bytes()) for p in reports]
    now = datetime.now(UTC)

    def run_ingest() -> int:
        # Cold caches every round: each round pays for its version parsing like a fresh process would.
        version_key.cache_clear()
        cvss_vector_score.cache_clear()
        n = 0
        for ref, data in blobs:
            n += len(parse_document(decode(data, ref), ref=ref, received_at=now).signals)
        return n

    def run_json() -> None:
        for _, data in blobs:
            json.loads(data)

    findings = run_ingest()  # warm-up (imports, caches)
    run_json()
    t_ingest, t_json = [], []
    for _ in range(args.rounds):
        gc.collect()  # each timed run starts from the same collector state
        t0 = time.perf_counter()
        run_ingest()
        t1 = time.perf_counter()
        gc.collect()
        t2 = time.perf_counter()
        run_json()
        t3 = time.perf_counter()
        t_ingest.append(t1 - t0)
        t_json.append(t3 - t2)
    ingest_s, json_s = statistics.median(t_ingest), statistics.median(t_json)
    result = {
        "findings_per_s": round(findings / ingest_s),
        "ratio_to_json_loads": round(ingest_s / json_s, 2),
        "findings": findings,
        "bytes": sum(len(d) for _, d in blobs),
        "ingest_ms": round(ingest_s * 1000, 2),
        "json_loads_ms": round(json_s * 1000, 2),
        "files": [ref for ref, _ in blobs],
        "rounds": args.rounds,
    }
    report(result)


if __name__ == "__main__":
    main()
