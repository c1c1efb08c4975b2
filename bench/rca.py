"""Root-cause ranking accuracy on an alert-correlation corpus file: the product's ranking (``fixloop.core.rca.rank``,
through the knowledge-graph adapter ``fixloop.core.topology.from_kg`` and the same alert mapping) on every fault.

    python bench/rca.py --kg KG.json --alerts ALERTS.json --labels LABELS.csv

Inputs (the corpus of "Stalled, Biased, and Confused", FORGE 2026): ``--kg`` the knowledge graph (``{"nodes",
"edges"}``), ``--alerts`` ``{fault_id: [[ts_ms, entity, host | null, metric, "up" | "down"], ...]}``, ``--labels`` a
CSV with at least ``fault_id``, ``fault_level``, ``fault_entity`` (other columns ignored). The labels are read only
to score.

History: each fault is ranked with a ``fixloop.core.rca.Background`` built from the OTHER faults' alerts of the same
file (leave-one-out), never from the labels; ``nohistory_*`` gives the figures without it, and ``past_*`` with the
history the product would have had: only the faults whose first alert came earlier, remembered as the intake does
(``fixloop.core.incidents.remember``, its 500-key bound).

Output: one line per fault on stderr, and last on stdout one JSON object ``{"faults", "top1", "top3",
"top1_service", "top3_service", "baseline_top1", ..., "seconds"}``, percentages: ``top1`` / ``top3`` the exact fault
entity ranked first / in the first three; ``*_service`` the same where, for a fault whose ``fault_level`` is
``service``, the service or any of its instances (``instance_of``) counts. ``baseline_*``: the same figures for the
earliest-alerting entity (``fixloop.core.rca.earliest``).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fixloop.core import incidents, rca, topology  # noqa: E402


def hits(ranked: list[str], level: str, entity: str, topo: topology.Topology) -> tuple[bool, bool, bool, bool]:
    """(top1, top3, top1_service, top3_service) of one fault."""

    def ok(e: str, mapped: bool) -> bool:
        return e == entity or (mapped and level == "service" and topo.service_of(e) == entity)

    return (
        bool(ranked[:1]) and ok(ranked[0], False),
        any(ok(e, False) for e in ranked[:3]),
        bool(ranked[:1]) and ok(ranked[0], True),
        any(ok(e, True) for e in ranked[:3]),
    )


def main(argv: list[str] | None = None) -> dict[str, object]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kg", required=True, type=Path)
    ap.add_argument("--alerts", required=True, type=Path)
    ap.add_argument("--labels", required=True, type=Path)
    args = ap.parse_args(argv)
    started = time.perf_counter()
    topo = topology.from_kg(json.loads(args.kg.read_text()))
    alerts = json.loads(args.alerts.read_text())
    with args.labels.open(newline="") as f:
        labels = list(csv.DictReader(f))
    print(f"topology: {topo.counts()}, ignored {topo.ignored or 'nothing'}", file=sys.stderr)
    names = ("top1", "top3", "top1_service", "top3_service")
    totals = dict.fromkeys(names, 0)
    base = dict.fromkeys(names, 0)
    bare = dict.fromkeys(names, 0)
    past = dict.fromkeys(names, 0)
    pairs = {fid: [(rca.resolve(topo, o), o.metric) for o in rca.observations(rows)] for fid, rows in alerts.items()}
    first = {fid: min((o.at_ms for o in rca.observations(rows)), default=0) for fid, rows in alerts.items()}
    remembered: dict[str, rca.Background | None] = {}
    so_far: rca.Background | None = None
    for fid in sorted(alerts, key=lambda f: (first[f], f)):  # the intake's history as each fault began
        remembered[fid] = so_far
        so_far = incidents.remember(so_far, sorted({f"{e}\x1f{m}" for e, m in pairs[fid]}))
    faults = 0
    for row in labels:
        fid, level, entity = row["fault_id"], row["fault_level"], row["fault_entity"]
        if fid not in alerts:
            print(f"fault {fid}: no alerts, counted as a miss", file=sys.stderr)
            faults += 1
            continue
        obs = rca.observations(alerts[fid])
        history = rca.background(p for other, p in pairs.items() if other != fid)
        ranking = rca.rank(topo, obs, background=history)
        ranked = [c.entity for c in ranking.candidates]
        got = hits(ranked, level, entity, topo)
        got_bare = hits([c.entity for c in rca.rank(topo, obs).candidates], level, entity, topo)
        got_past = hits(
            [c.entity for c in rca.rank(topo, obs, background=remembered[fid]).candidates], level, entity, topo
        )
        got_base = hits(rca.earliest(topo, obs), level, entity, topo)
        faults += 1
        for n, h, hb, hn, hp in zip(names, got, got_base, got_bare, got_past, strict=True):
            totals[n] += h
            base[n] += hb
            bare[n] += hn
            past[n] += hp
        print(
            f"fault {fid} {level} {entity}: {'HIT ' if got[2] else 'miss'} ranked {ranked[:3]}"
            f" ({len(obs)} alerts; baseline {'hit' if got_base[2] else 'miss'})",
            file=sys.stderr,
        )
    pct = {n: round(100 * totals[n] / faults, 1) if faults else 0.0 for n in names}
    figures: dict[str, object] = {"faults": faults, **pct}
    figures |= {f"baseline_{n}": round(100 * base[n] / faults, 1) if faults else 0.0 for n in names}
    figures |= {f"nohistory_{n}": round(100 * bare[n] / faults, 1) if faults else 0.0 for n in names}
    figures |= {f"past_{n}": round(100 * past[n] / faults, 1) if faults else 0.0 for n in names}
    figures["seconds"] = round(time.perf_counter() - started, 2)
    return figures


if __name__ == "__main__":
    from bench.common import report

    report(main())
