"""Refresh the recorded workflow histories of tests/fixtures/histories: ``python -m tests.record_histories``.

Runs the workflow tests that record them (``tests.workflows.histories.RECORDED``) with ``FIXLOOP_RECORD_HISTORIES=1``
on the Temporal test server, then checks that each listed history was written by this run and removes any other
``*.json`` there (a history no test records any more). Exit status: pytest's when a test failed, 1 when a history
is missing, else 0. Extra arguments go to pytest (e.g. ``-x``). Commit the histories it wrote with the workflow
change they go with (see tests/fixtures/histories/README.md).
"""

from __future__ import annotations

import os
import sys
import time

import pytest

from tests.workflows.histories import HISTORIES, RECORD_VARIABLE, RECORDED


def main(argv: list[str]) -> int:
    os.environ[RECORD_VARIABLE] = "1"
    started = time.time()
    code = pytest.main(["-q", "-p", "no:cacheprovider", *argv, *RECORDED])
    if code != 0:
        return int(code)
    wanted = {f"{name}.json" for names in RECORDED.values() for name in names}
    missing = sorted(n for n in wanted if not (HISTORIES / n).is_file() or (HISTORIES / n).stat().st_mtime < started)
    for stale in sorted(p for p in HISTORIES.glob("*.json") if p.name not in wanted):
        stale.unlink()
        print(f"removed {stale.name}: no test records it")
    if missing:
        print(f"not written by this run: {', '.join(missing)}", file=sys.stderr)
        return 1
    print(f"{len(wanted)} histories written to {HISTORIES}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
