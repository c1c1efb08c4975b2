"""The ``llm`` engine's answer schema is made of its digest (``fixloop.core.triage.llm.answer_schema``): one required
property per digest id (every entry exactly once), each entry's kinds and group numbers restricted to the groups it
may be in, in the subset of JSON schema that OpenAI's strict mode and llama.cpp's grammar both take, so that every
answer it allows passes the checks; and whatever the model answers, every signal ends up exactly once (the groups
that pass kept, the rest the rules engine's)."""

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
from fixloop.core.triage.llm import (
    REASON_PATTERN,
    LlmAnswer,
    _check,
    _entries,
    _partition,
    answer_schema,
    group_numbers,
)
from fixloop.core.triage.rules import DEFAULT_ALERT_WINDOW, DEFAULT_ATTACH_WINDOW
from tests.activities.test_triage_llm import INPUTS, digest_of, placed, sensible
from tests.activities.test_triage_llm import settings as llm_settings
from tests.conftest import signals
from tests.llm_server import FakeLlm, answer

KEYWORDS = {"type", "properties", "required", "additionalProperties", "items", "enum", "anyOf", "pattern"}
KEYWORDS |= {"minimum", "maximum", "maxItems"}


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
    names = {"assignments", "groups", "kind", "group", "unassigned", "number", "title"}
    assert set(keywords(schema)) <= KEYWORDS | set(ids) | names

    # one required property per digest id and no other: every entry placed exactly once, none invented
    assignments = schema["properties"]["assignments"]
    assert list(assignments["properties"]) == assignments["required"] == ids
    numbers = schema["properties"]["groups"]["items"]["properties"]["number"]
    assert schema["properties"]["groups"]["maxItems"] == len(ids)

    def shapes(entry_id: str) -> dict[str, range]:
        """An entry's kinds -> the group numbers the schema lets it have in that kind."""
        alternatives = assignments["properties"][entry_id]["anyOf"]
        waiver = {"unassigned": {"type": "string", "pattern": REASON_PATTERN}}
        waivable = alternatives[-1]["properties"] == waiver
        assert waivable == ("fix" not in docs[entry_id][2])  # a finding with a fix can never be unassigned
        kinds = alternatives[:-1] if waivable else alternatives
        out = {}
        for alt in kinds:
            (kind,) = alt["properties"]["kind"]["enum"]
            group = alt["properties"]["group"]
            out[kind] = range(group["minimum"], group["maximum"] + 1)
        assert len(out) == len(kinds)  # one shape per kind: each alternative's first value differs
        return out

    kinds = {i: shapes(i) for i in ids}
    assert {k for i in ids for k in kinds[i]} == {"os_rebuild", "dependency_bump", "risk_digest", "alert_investigation"}
    every = {n for i in ids for block in kinds[i].values() for n in block}
    assert every == set(range(1, numbers["maximum"] + 1)) and numbers["minimum"] == 1
    blocks: dict[tuple[str, range], list[str]] = {}
    for i in ids:
        for kind, block in kinds[i].items():
            blocks.setdefault((kind, block), []).append(i)
    for (kind, block), members in blocks.items():
        assert len(block) == len(members)  # a class can be split in as many groups as it has entries
        for other_kind, other in blocks:
            assert (other_kind, other) == (kind, block) or not set(block) & set(other)  # no number shared
        alert = [docs[i][0] is None for i in members]
        assert all(alert) == (kind == "alert_investigation") and len(set(alert)) == 1  # never findings and alerts
        if kind != "alert_investigation":
            assert len({docs[i][0] for i in members}) == 1  # one artifact
        if kind == "os_rebuild":
            assert all(docs[i][2]["os_package"] and "fix" in docs[i][2] for i in members)
        if kind == "dependency_bump":
            assert all(not docs[i][2]["os_package"] and "fix" in docs[i][2] for i in members)
            assert len({docs[i][1] for i in members}) == 1  # one manifest
    alerts = [i for i in ids if docs[i][0] is None]
    assert [m for (k, _), m in blocks.items() if k == "alert_investigation"] == [alerts]
    fixable = {i for i in ids if "fix" in docs[i][2]}
    assert fixable and all(len(kinds[i]) == 1 for i in fixable)  # a fix is rebuilt or bumped, never only reviewed
    assert {i for (k, _), m in blocks.items() if k == "risk_digest" for i in m} == set(ids) - set(alerts) - fixable
    rebuilds = {i for i in ids if docs[i][2].get("os_package") and "fix" in docs[i][2]}
    assert len([k for k, _ in blocks if k == "os_rebuild"]) == len({docs[i][0] for i in rebuilds}) >= 2  # per image

    good = sensible(request.body)
    for t in good["groups"]:
        t["title"] = t["title"][:60]  # a title is one line of at most 60 characters, no quote or backslash
    jsonschema.validate(good, schema)  # a good answer is one the schema allows
    for title in ("x" * 61, 'say "hi"', "a\\b", "two\nlines", ""):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**good, "groups": [{**good["groups"][0], "title": title}]}, schema)
    some = ids[0]
    for wrong in (
        {"assignments": {k: v for k, v in good["assignments"].items() if k != some}},  # an entry left out
        {"assignments": {**good["assignments"], "e999": good["assignments"][some]}},  # an invented one
        {"assignments": {**good["assignments"], alerts[0]: {"kind": "os_rebuild", "group": 1}}},  # an alert rebuilt
        {"assignments": {**good["assignments"], alerts[0]: {"kind": "alert_investigation", "group": 1}}},  # a number
        {"groups": [{"number": numbers["maximum"] + 1, "title": "t"}]},  # a title of no group
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(good | wrong, schema)


def _digest_entries(given: list[Signal]) -> list[Any]:
    findings, alerts, _ = _partition(given)
    return _entries(findings, alerts, (), DEFAULT_ALERT_WINDOW, DEFAULT_ATTACH_WINDOW)


@pytest.mark.parametrize("grouping", ["per-manifest", "per-package", "per-service"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_every_answer_the_schema_allows_passes_the_checks(
    storm: list[Signal], grouping: Grouping, data: st.DataObject
) -> None:
    """The schema states all the checks: any answer it allows (each entry without a fix unassigned, or any of its
    kinds with any number of that kind's block; titles for any numbers, or none) passes them."""
    names = ServiceNames.of(None)
    entries = _digest_entries(storm)
    numbers = group_numbers(entries, grouping, names)
    assignments: dict[str, Any] = {}
    for e in entries:
        mine = [kind for kind in numbers if e.id in numbers[kind]]
        if not e.fixable and data.draw(st.integers(0, 9)) == 0:
            assignments[e.id] = {"unassigned": "none"}
            continue
        kind = data.draw(st.sampled_from(mine))
        assignments[e.id] = {"kind": kind.value, "group": data.draw(st.sampled_from(numbers[kind][e.id]))}
    used = sorted({a["group"] for a in assignments.values() if "group" in a})
    titled = data.draw(st.lists(st.sampled_from(used or [1]), max_size=len(entries)))
    ans = {"assignments": assignments, "groups": [{"number": n, "title": "t"} for n in titled]}
    jsonschema.validate(ans, answer_schema(entries, grouping, names))
    _check(LlmAnswer.model_validate(ans), {e.id: e for e in entries}, grouping, names)


KINDS = [k.value for k in WorkItemKind]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
async def test_whatever_the_answer_every_signal_is_placed_once(storm: list[Signal], data: st.DataObject) -> None:
    """Random answers (unknown ids, kinds mixed under one number, wrong kinds, entries left out, groups untitled or
    titled twice): the groups that pass are the model's,
    the rest the rules engine's on exactly their signals, and no signal is lost or doubled."""
    entries = _digest_entries(storm)
    ids = [e.id for e in entries] + ["e999", "<img src="]
    placed_as = st.one_of(
        st.fixed_dictionaries({"kind": st.sampled_from(KINDS), "group": st.integers(0, 5)}),
        st.fixed_dictionaries({"unassigned": st.just("r")}),
    )
    assignments = data.draw(st.dictionaries(st.sampled_from(ids), placed_as, max_size=len(ids)))
    titles = data.draw(st.lists(st.integers(0, 5), max_size=4))
    ans = LlmAnswer.model_validate(
        {"assignments": assignments, "groups": [{"number": n, "title": "LLM: t"} for n in titles]}
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
