"""``fixloop triage --engine llm`` on a real small model (SmolLM2-135M behind llama.cpp's server, the ``local_llm``
fixture: grammar-constrained by the schema made of the digest) over the demo's real reports and alerts: whatever
the model answers, the groups that pass the checks are its own, the rest is the rules engine's saying why, and
every signal is placed exactly once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from fixloop.app.ingest import ingest_file
from fixloop.app.llmserve import LocalServer
from fixloop.core.models import TriageResult
from fixloop.core.triage import FALLBACK_NOTE, triage_rules, violations

ROOT = Path(__file__).resolve().parents[2]
DEMO = [*sorted((ROOT / "examples/demo/reports").iterdir()), *sorted((ROOT / "examples/demo/alerts").iterdir())]


def test_the_cli_triages_the_demo_with_a_real_model(local_llm: LocalServer, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FIXLOOP_", "OPENAI_"))}
    env |= dict(line.removeprefix("export ").split("=", 1) for line in local_llm.exports())
    env |= {"FIXLOOP_LLM_TIMEOUT": "600", "FIXLOOP_LLM_MAX_RETRIES": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "fixloop", "triage", "--engine", "llm", *map(str, DEMO)],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    result = TriageResult.model_validate_json(proc.stdout)
    given = [s for f in DEMO for s in ingest_file(f).signals]
    placed = [fp for w in result.work_items for fp in w.signals] + [u.fingerprint for u in result.unassigned]
    assert sorted(placed) == sorted({s.fingerprint for s in given})  # every signal exactly once
    assert violations(given, result) == []
    assert {w.engine for w in result.work_items} <= {"llm", "rules"}
    fell = [w for w in result.work_items if w.engine == "rules"]
    for w in fell:  # the rules engine's items say why the model's were not used
        assert w.note is not None and w.note.startswith(FALLBACK_NOTE), w.note
    for w in result.work_items:
        if w.engine == "llm":  # the model's grouping; its title, or code's when it names nothing of the item
            assert w.note is None or w.note.startswith("titled by fixloop: the model's title "), w.note
            assert 0 < len(w.title) <= 300
    theirs = {fp for w in fell for fp in w.signals}
    by_rules = triage_rules([s for s in given if s.fingerprint in theirs]).work_items
    strip = {"engine", "note"}
    assert sorted(w.model_dump_json(exclude=strip) for w in fell) == sorted(
        w.model_dump_json(exclude=strip) for w in by_rules
    )
    warned = [line for line in proc.stderr.splitlines() if FALLBACK_NOTE in line]
    assert bool(warned) == bool(fell), proc.stderr  # a fallback, whole or partial, is said on stderr
    print(json.dumps([(w.engine, w.kind.value, w.title, w.note) for w in result.work_items], indent=1))
