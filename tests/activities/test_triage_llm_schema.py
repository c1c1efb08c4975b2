"""The ``llm`` engine's answer schema is made of its digest (``fixloop.core.triage.llm.answer_schema``): ids as enums
of exactly the digest's ids, each kind's groups restricted to the entries it may hold together, in the subset of
JSON schema that OpenAI's strict mode and llama.cpp's grammar both take; and whatever the model answers, every
signal ends up exactly once (the groups that pass kept, the rest the rules engine's)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fixloop.activities.triage import triage
from fixloop.core.models import Grouping, Signal, WorkItemKind
from fixloop.core.service import ServiceNames
from fixloop.core.triage import FALLBACK_NOTE, triage_llm, triage_rules, violations
from fixloop.core.triage.llm import LlmAnswer, _check, _classes, _entries, _partition, answer_schema
from fixloop.core.triage.rules import DEFAULT_ALERT_WINDOW, DEFAULT_ATTACH_WINDOW
from tests.activities.test_triage_llm import INPUTS, digest_of, placed, sensible
from tests.activities.test_triage_llm import settings as llm_settings
from tests.conftest import signals
from tests.llm_server import FakeLlm, answer

KEYWORDS = {"type", "properties", "required", "additionalProperties", "items", "enum", "anyOf", "pattern"}
KEYWORDS |= {"minItems", "maxItems"}


@pytest.fixture(scope="module")
def storm() -> list[Signal]:
    return [s for rel in INPUTS for s in signals(rel)]


def objects(schema: object) -> Iterator[dict[str, Any]]:
    if isinstance(schema, dict):
        if schema.get("type") == "object":
            yield schema
        for v in schema.values():
            yield from objects(v)
    elif isinstance(schema, list):
        for v in schema:
            yield from objects(v)


def keywords(schema: object) -> Iterator[str]:
    if isinstance(schema, dict):
        for k, v in schema.items():
            yield k
            yield from keywords(v.values() if k == "properties" else v)
    elif isinstance(schema, list | type({}.values())):
        for v in schema:
            yield from keywords(v)


def entry_docs(doc: dict[str, Any]) -> dict[str, tuple[str | None, str | None, dict[str, Any]]]:
    """Every digest entry: id -> (artifact, target, the entry), alerts with (None, None)."""
    out = {}
    for a in doc["artifacts"]:
        for t in a["targets"]:
            out |= {e["id"]: (a["artifact"], t.get("target"), e) for e in t["entries"]}
    return out | {e["id"]: (None, None, e) for e in doc["alerts"]}


async def test_the_schema_is_made_of_the_digest(llm_server: FakeLlm, storm: list[Signal]) -> None:
    llm_server.reply = lambda body: answer(sensible(body))
    result = await triage(storm, engine="llm", llm=llm_settings(llm_server))
    assert {w.engine for w in result.work_items} == {"llm"}
    (request,) = llm_server.requests
    fmt = request.body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["name"] == "LlmAnswer"
    schema = fmt["json_schema"]["schema"]
    docs = entry_docs(digest_of(request.body))
    ids = list(docs)

    # strict: every object closed, every property required; only keywords OpenAI's strict mode and llama.cpp take
    for obj in objects(schema):
        assert obj["additionalProperties"] is False and obj["required"] == list(obj["properties"])
    assert set(keywords(schema)) <= KEYWORDS | {"groups", "unassigned", "kind", "entries", "title", "entry", "reason"}

    unassigned = schema["properties"]["unassigned"]
    enum = unassigned["items"]["properties"]["entry"]["enum"]
    assert sorted(enum) == sorted(ids) and len(set(enum)) == len(enum)  # exactly the digest's ids
    assert schema["properties"]["groups"]["maxItems"] == unassigned["maxItems"] == len(ids)
    alternatives = schema["properties"]["groups"]["items"]["anyOf"]
    shapes = {s["properties"]["kind"]["enum"][0]: s["properties"] for s in alternatives}
    assert len(shapes) == len(alternatives)  # one shape per kind: each alternative's first key differs
    assert set(shapes) == {"os_rebuild", "dependency_bump", "risk_digest", "alert_investigation"}  # no deploys here

    def classes(kind: str) -> list[list[str]]:
        entries = shapes[kind]["entries"]
        arrays = entries["anyOf"] if "anyOf" in entries else [entries]
        for a in arrays:
            assert a["minItems"] == 1 and a["maxItems"] == len(a["items"]["enum"])
        return [a["items"]["enum"] for a in arrays]

    alerts = [i for i in ids if docs[i][0] is None]
    assert classes("alert_investigation") == [alerts]  # alerts only, all of them
    for kind in ("os_rebuild", "dependency_bump", "risk_digest"):
        for c in classes(kind):
            assert not set(c) & set(alerts)  # never an alert in a finding group
            assert len({docs[i][0] for i in c}) == 1  # one artifact
    for c in classes("os_rebuild"):
        assert all(docs[i][2]["os_package"] and "fix" in docs[i][2] for i in c)
    for c in classes("dependency_bump"):
        assert all(not docs[i][2]["os_package"] and "fix" in docs[i][2] for i in c)
        assert len({docs[i][1] for i in c}) == 1  # one manifest
    rebuilds = {i for i in ids if docs[i][2].get("os_package") and "fix" in docs[i][2]}
    assert {i for c in classes("os_rebuild") for i in c} == rebuilds
    assert {i for c in classes("risk_digest") for i in c} == set(ids) - set(alerts)  # any finding may be reviewed
    assert len(classes("os_rebuild")) == len({docs[i][0] for i in rebuilds}) >= 2  # one class per image

    good = sensible(request.body)
    for g in good["groups"]:
        g["title"] = g["title"][:60]  # a title is one line of at most 60 characters, no quote or backslash
    jsonschema.validate(good, schema)  # a good answer is one the schema allows
    for title in ("x" * 61, 'say "hi"', "a\\b", "two\nlines", ""):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**good, "groups": [{**good["groups"][0], "title": title}]}, schema)
    bad = sensible(request.body)
    bad["groups"][0]["entries"].append("e999")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    bad = sensible(request.body)
    bad["groups"][-1]["kind"] = "os_rebuild"  # the alerts' group
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def _digest_entries(given: list[Signal]) -> list[Any]:
    findings, alerts, _ = _partition(given)
    return _entries(findings, alerts, (), DEFAULT_ALERT_WINDOW, DEFAULT_ATTACH_WINDOW)


@pytest.mark.parametrize("grouping", ["per-manifest", "per-package", "per-service"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_an_answer_the_schema_allows_that_places_each_entry_once_passes_the_checks(
    storm: list[Signal], grouping: Grouping, data: st.DataObject
) -> None:
    """What the schema cannot say is only "exactly once": any answer made of its classes that places each entry
    once is valid."""
    names = ServiceNames.of(None)
    entries = _digest_entries(storm)
    options = [(kind, n, c) for kind, cs in _classes(entries, grouping, names).items() for n, c in enumerate(cs)]
    groups: dict[tuple[WorkItemKind, int, int], list[str]] = {}
    unassigned = []
    for e in entries:
        mine = [(kind, n) for kind, n, c in options if e.id in c]
        if data.draw(st.integers(0, 9)) == 0:
            unassigned.append({"entry": e.id, "reason": "none"})
            continue
        kind, n = data.draw(st.sampled_from(mine))
        part = data.draw(st.integers(0, 1))  # a class may be split in two groups
        groups.setdefault((kind, n, part), []).append(e.id)
    ans = {"groups": [{"kind": k.value, "title": "t", "entries": ids} for (k, _, _), ids in groups.items()]}
    ans["unassigned"] = unassigned
    jsonschema.validate(ans, answer_schema(entries, grouping, names))
    _check(LlmAnswer.model_validate(ans), {e.id: e for e in entries}, grouping, names)


KINDS = [k.value for k in WorkItemKind]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
async def test_whatever_the_answer_every_signal_is_placed_once(storm: list[Signal], data: st.DataObject) -> None:
    """Random answers (unknown ids, repeats, wrong kinds, entries left out): the groups that pass are the model's,
    the rest the rules engine's on exactly their signals, and no signal is lost or doubled."""
    entries = _digest_entries(storm)
    ids = [e.id for e in entries] + ["e999", "<img src="]
    pick = st.lists(st.sampled_from(ids), max_size=6)
    groups = data.draw(st.lists(st.fixed_dictionaries({"kind": st.sampled_from(KINDS), "entries": pick}), max_size=8))
    unassigned = data.draw(st.lists(st.sampled_from(ids), max_size=3))
    ans = LlmAnswer.model_validate(
        {
            "groups": [g | {"title": "LLM: t"} for g in groups],
            "unassigned": [{"entry": i, "reason": "r"} for i in unassigned],
        }
    )

    async def complete(**_: Any) -> LlmAnswer:
        return ans

    told: list[str] = []
    result = await triage_llm(storm, complete=complete, max_entries=400, on_fallback=told.append)
    assert sorted(placed(result)) == sorted({s.fingerprint for s in storm})
    assert violations(storm, result) == []
    fell = [w for w in result.work_items if w.engine == "rules"]
    assert all((w.note or "").startswith(FALLBACK_NOTE) and len(w.note or "") <= 400 for w in fell)
    assert bool(fell) == bool(told)
    theirs = {fp for w in fell for fp in w.signals}
    by_rules = triage_rules([s for s in storm if s.fingerprint in theirs]).work_items
    strip = {"engine", "note"}
    assert sorted(w.model_dump_json(exclude=strip) for w in fell) == sorted(
        w.model_dump_json(exclude=strip) for w in by_rules
    )
