"""The topology model and its adapters (fixloop.core.topology) on real inputs: the alert-correlation corpus's
knowledge graph (tests/fixtures/alert-correlation, see tests/fixtures/SOURCES.md) and the sandbox's seeded GitOps
manifests (sandbox/gitops_seed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fixloop.core import topology
from fixloop.core.topology import EdgeKind, EntityKind
from tests.conftest import FIXTURES

KG = FIXTURES / "alert-correlation" / "rca-llm-reasoning_OB-cloudbed-2_KG.json"
SEED = Path(__file__).resolve().parent.parent / "sandbox" / "gitops_seed"

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


def _kg() -> dict:
    return json.loads(KG.read_text())


def test_kg_adapter_maps_every_type_and_label_of_the_corpus_graph() -> None:
    """Service, Service_Instance, Host, Database, Cache, Cache_Instance and the six edge labels (control_flow,
    data_flow, instance_of, has_instance, hosted_on, hosts) all map; the reversed labels collapse onto the forward
    ones (42 instances: 42 instance_of and 42 runs_on edges, not 84)."""
    t = topology.from_kg(_kg())
    assert t.counts() == {
        "service": 10,
        "instance": 42,
        "host": 6,
        "database": 1,
        "cache": 1,
        "calls": 16,
        "instance_of": 42,
        "runs_on": 42,
    }
    assert t.ignored == {} and t.cut == {}
    assert sorted(t.callers("productcatalogservice")) == ["checkoutservice", "frontend", "recommendationservice"]
    assert t.callees("cartservice") == ["redis-cart"]  # data_flow: a service reading its cache calls it
    assert t.kind("redis-cart-0") is EntityKind.INSTANCE and t.service_of("redis-cart-0") == "redis-cart"
    assert t.kind("productcatalog") is EntityKind.DATABASE
    assert t.host_of("frontend-0") == "node-5"
    assert sorted(t.instances("frontend")) == ["frontend-0", "frontend-1", "frontend-2", "frontend2-0"]
    assert t.kind("nothing-like-this") is None and t.callers("nothing-like-this") == []


def test_kg_adapter_counts_unknown_types_and_labels() -> None:
    doc = _kg()
    doc["nodes"].append({"id": "orders-queue", "type": "Message_Queue"})
    doc["edges"] += [
        {"source": "frontend", "target": "checkoutservice", "label": "owned_by_team"},
        {"source": "frontend", "target": "orders-queue", "label": "control_flow"},
    ]
    t = topology.from_kg(doc)
    assert t.ignored == {"type:Message_Queue": 1, "label:owned_by_team": 1, "edge to an unknown node": 1}
    assert t.kind("orders-queue") is None
    with pytest.raises(ValueError, match="nodes"):
        topology.from_kg({"nodes": {}})


def test_bounds_cut_entities_and_edges_with_counts() -> None:
    """60 nodes and 184 edges (each of the 42 instances' two relations also written backwards): 12 entities kept,
    48 cut; 5 edges kept, every other edge counted as cut (those to a cut entity too), none called unknown."""
    doc = _kg()
    assert (len(doc["nodes"]), len(doc["edges"])) == (60, 184)
    t = topology.from_kg(doc, max_entities=12, max_edges=5)
    assert len(t.entities) == 12 and t.cut["entities"] == 48
    assert len(t.edges) == 5 and t.ignored == {}
    full = topology.from_kg(doc)
    assert len(full.edges) == 100  # 184 less the 84 backward duplicates
    assert t.cut["edges"] + len(t.edges) >= 100


POLICY = """\
version: 1
topology:
  services:
    storefront: [catalog, payments]
    catalog: {calls: [inventory, catalog-db], instances: [catalog-0, catalog-1], hosts: [node-1]}
    inventory: []
  datastores:
    catalog-db: database
    sessions: cache
  calls:
    - [payments, sessions]
"""


def test_policy_section_schema() -> None:
    t = topology.from_policy_text(POLICY)
    assert t.kind("payments") is EntityKind.SERVICE  # a callee not declared becomes a service
    assert t.kind("sessions") is EntityKind.CACHE and t.kind("catalog-db") is EntityKind.DATABASE
    assert sorted(t.callees("storefront")) == ["catalog", "payments"]
    assert sorted(t.callees("catalog")) == ["catalog-db", "inventory"]
    assert t.callees("payments") == ["sessions"]
    assert t.service_of("catalog-1") == "catalog" and t.host_of("catalog-1") == "node-1"
    assert t.kind("node-1") is EntityKind.HOST


def _calls(t: topology.Topology) -> list[tuple[str, str]]:
    return sorted((e.source, e.target) for e in t.edges if e.kind is EdgeKind.CALLS)


def test_the_seeded_policy_and_manifests_give_one_topology_and_malformed_sections_are_named() -> None:
    seeded = topology.from_policy_text((SEED / "fixloop.yaml").read_text())
    shop = [("catalog", "inventory"), ("payments", "legacy-api"), ("storefront", "catalog"), ("storefront", "payments")]
    assert _calls(seeded) == shop
    assert _calls(topology.from_manifests(_seed_texts().values())) == shop  # the Deployments' *_URL env values
    for text, where in [
        ("topology: [a]", "topology: expected a mapping"),
        ("topology: {services: {a: [1]}}", "topology.services.a"),
        ("topology: {datastores: {db: queue}}", "topology.datastores.db"),
        ("topology: {calls: [[a]]}", r"topology.calls\[0\]"),
        ("topology: {edges: []}", "topology.edges: unknown key"),
        ("topology: {services: {a: {callz: [b]}}}", "topology.services.a.callz"),
        (": [", "not valid YAML"),
    ]:
        with pytest.raises(ValueError, match=where):
            topology.from_policy_text(text)


_keys_st = st.sampled_from(["a", "b", "db", ""]) | st.text(max_size=5) | st.integers() | st.none()
_names_st = st.sampled_from(["a", "b", "db", ""]) | _json
_section = st.fixed_dictionaries(
    {},
    optional={
        "services": _json | st.dictionaries(_keys_st, _json | st.lists(_names_st, max_size=3), max_size=3),
        "datastores": _json | st.dictionaries(_keys_st, st.sampled_from(["database", "cache", "queue"]) | _json),
        "calls": _json | st.lists(st.lists(_names_st, max_size=3), max_size=3),
    },
)


@settings(max_examples=300, deadline=None)
@given(_section | _json)
def test_any_topology_section_is_a_topology_or_a_named_error(section: object) -> None:
    try:
        t = topology.from_policy(section)
    except ValueError as e:
        assert str(e).startswith("fixloop.yaml: topology")
    else:
        assert all(isinstance(k, str) for k in t.entities)


def _seed_texts() -> dict[str, str]:
    return {str(p.relative_to(SEED)): p.read_text() for p in sorted(SEED.rglob("*.yaml"))}


def test_manifests_of_the_seeded_repository_make_one_service_per_workload() -> None:
    t = topology.from_manifests(_seed_texts().values())
    assert t.entities == dict.fromkeys(["catalog", "inventory", "legacy-api", "payments", "storefront"], "service")
    assert t.ignored == {}


def test_service_dns_names_in_env_args_and_configmaps_make_calls_edges() -> None:
    """The seeded storefront Deployment given an env URL with the bare Service name and port, an arg with the
    ``<name>.<ns>.svc.cluster.local`` form, and a ConfigMap it imports (envFrom) naming ``<name>.<ns>``: three calls
    edges; a name of another namespace and a name no Service answers make none."""
    texts = _seed_texts()
    dep = texts["apps/base/storefront/deployment.yaml"]
    marker = "          ports:\n"
    assert marker in dep and dep.count("          env:\n") == 1
    dep = dep[: dep.index("          env:\n")]  # the seeded env (its own calls edges) gives way to the test's
    dep = dep.replace(
        marker,
        "          env:\n"
        "            - name: CATALOG_URL\n"
        "              value: http://catalog:80/api\n"
        "            - name: OTHER\n"
        "              value: http://inventory.other-ns:80\n"
        "            - name: EXTERNAL\n"
        "              value: https://api.stripe.com\n"
        "          args: ['--payments=payments.default.svc.cluster.local:8080']\n"
        "          envFrom:\n"
        "            - configMapRef: {name: storefront-config}\n" + marker,
    )
    texts["apps/base/storefront/deployment.yaml"] = dep
    texts["apps/base/storefront/config.yaml"] = (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: storefront-config}\n"
        "data:\n  LEGACY: 'legacy-api.default:80'\n"
    )
    texts["unused.yaml"] = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: nobody}\ndata: {X: inventory}\n"
    t = topology.from_manifests(texts.values())
    assert sorted(t.callees("storefront")) == ["catalog", "legacy-api", "payments"]
    assert all(e.kind is EdgeKind.CALLS for e in t.edges)
    assert _calls(t) == [("catalog", "inventory"), ("payments", "legacy-api")] + [
        ("storefront", x) for x in ("catalog", "legacy-api", "payments")
    ]  # the other seeded Deployments' edges stay as they are


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=400))
def test_any_manifest_text_is_read_or_counted_never_raised(text: str) -> None:
    t = topology.from_manifests([text, "kind: Deployment\nmetadata: {name: a}\n"])
    assert t.kind("a") is EntityKind.SERVICE


_node = st.fixed_dictionaries(
    {},
    optional={
        "id": _json | st.text(max_size=5),
        "type": _json | st.sampled_from(["Service", "Service_Instance", "Host", "Cache_Instance", "Queue"]),
    },
)
_edge = st.fixed_dictionaries(
    {},
    optional={
        "source": _json,
        "target": _json,
        "label": _json | st.sampled_from(["control_flow", "hosts", "has_instance", "odd"]),
    },
)


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries({"nodes": st.lists(_json | _node, max_size=6), "edges": st.lists(_json | _edge, max_size=6)})
)
def test_any_kg_shaped_document_maps_or_counts(doc: dict) -> None:
    """Every node becomes an entity or is counted (unknown type, invalid id); nothing is lost silently."""
    t = topology.from_kg(doc)

    def good(n: object) -> bool:
        ok_id = isinstance(n, dict) and isinstance(n.get("id"), str) and 0 < len(n["id"]) <= topology.NAME_MAX
        return ok_id and topology.kg_kind(n.get("type")) is not None  # type: ignore[union-attr]

    counted = sum(v for k, v in t.ignored.items() if k.startswith("type:") or k == "invalid name")
    assert counted == sum(1 for n in doc["nodes"] if not good(n))
    assert all(n["id"] in t.entities for n in doc["nodes"] if good(n))


_container = st.fixed_dictionaries({}, optional={k: _json for k in ("env", "args", "command", "envFrom", "name")})
_pod = st.fixed_dictionaries(
    {}, optional={"containers": _json | st.lists(_container, max_size=3), "initContainers": _json, "volumes": _json}
)


@settings(max_examples=300, deadline=None)
@given(_pod, _json)
def test_any_shape_of_workload_spec_or_configmap_data_is_read_never_raised(pod: object, data: object) -> None:
    """Valid YAML of the wrong shapes (a number for ``containers``, a string for ``env``, ...) inside a Deployment, a
    Service and a ConfigMap: the workload is still a service, nothing raises."""
    docs = [
        {"kind": "Deployment", "metadata": {"name": "a"}, "spec": {"template": {"spec": pod, "metadata": pod}}},
        {"kind": "Deployment", "metadata": {"name": "b"}, "spec": {"template": {"spec": {"containers": [pod]}}}},
        {"kind": "Service", "metadata": {"name": "a"}, "spec": pod},
        {"kind": "ConfigMap", "metadata": {"name": "c"}, "data": data},
    ]
    t = topology.from_manifests([json.dumps(d) for d in docs])
    assert t.kind("a") is EntityKind.SERVICE and t.kind("b") is EntityKind.SERVICE


def test_a_topology_survives_json_as_temporal_carries_it() -> None:
    """Temporal's pydantic converter writes ``to_json`` and validates back: the lookups are rebuilt."""
    from pydantic_core import to_json

    t = topology.from_kg(_kg())
    back = topology.Topology.model_validate_json(to_json(t))
    assert back == t and back.callers("productcatalogservice") == t.callers("productcatalogservice")
    assert back.host_of("frontend-0") == "node-5" and len(to_json(t)) < 16_000


# --- (c) Datadog APM service dependencies, and the merge of sources ---------------------------------------------

APM = FIXTURES / "datadog" / "api" / "datadog-docs_v1_service-dependencies_list_example.json"


def test_service_dependencies_adapter_reads_the_api_reference_example() -> None:
    """The API reference's example answer (its upstream typo ``servica_a`` kept): four services, four calls edges, a
    leaf service (``calls: []``) still an entity."""
    t = topology.from_service_dependencies(json.loads(APM.read_text()))
    assert t.entities == dict.fromkeys(["servica_a", "service_b", "service_c", "service_o"], EntityKind.SERVICE)
    assert sorted(t.callees("servica_a")) == ["service_b", "service_c"]
    assert sorted(t.callers("service_o")) == ["service_b", "service_c"]
    assert t.counts() == {"service": 4, "calls": 4} and t.ignored == {} and t.cut == {}


def test_service_dependencies_adapter_counts_what_it_cannot_read_and_keeps_its_bounds() -> None:
    doc = {"a": {"calls": ["b", 7, ""]}, "odd": {"callers": []}, "x" * 300: {"calls": []}, "c": ["d"]}
    t = topology.from_service_dependencies(doc)
    assert t.entities == {"a": EntityKind.SERVICE, "b": EntityKind.SERVICE}
    assert t.ignored == {"callee not a name": 1, "invalid name": 2, "service without a calls list": 2}
    wide = {f"s{i}": {"calls": [f"s{i + 1}"]} for i in range(50)}
    bounded = topology.from_service_dependencies(wide, max_entities=10, max_edges=4)
    assert len(bounded.entities) == 10 and len(bounded.edges) == 4
    assert bounded.cut["entities"] > 0 and bounded.cut["edges"] > 0
    for not_an_object in ([], "a", None, 3):
        with pytest.raises(ValueError, match="expected an object"):
            topology.from_service_dependencies(not_an_object)


@settings(max_examples=300, deadline=None)
@given(_json | st.dictionaries(st.text(max_size=6), _json | st.fixed_dictionaries({"calls": _json}), max_size=6))
def test_any_json_is_a_service_map_or_a_value_error_for_a_non_object(doc: object) -> None:
    try:
        t = topology.from_service_dependencies(doc, max_entities=5, max_edges=5)
    except ValueError:
        assert not isinstance(doc, dict)
    else:
        assert isinstance(doc, dict) and len(t.entities) <= 5 and len(t.edges) <= 5
        assert all(e.kind is EdgeKind.CALLS and e.source in t.entities and e.target in t.entities for e in t.edges)


def test_merge_unions_the_sources_and_the_first_kind_wins() -> None:
    policy = topology.from_policy_text(POLICY)  # catalog-db: a database
    apm = topology.from_service_dependencies(
        {"catalog": {"calls": ["catalog-db", "search"]}, "catalog-db": {"calls": []}}
    )
    merged = topology.merge(policy, apm)
    assert merged.kind("catalog-db") is EntityKind.DATABASE  # the policy's kind, APM's "service" counted
    assert merged.ignored == {"kind conflict": 1}
    assert sorted(merged.callees("catalog")) == ["catalog-db", "inventory", "search"]  # one edge for the duplicate
    assert merged.service_of("catalog-0") == "catalog" and merged.host_of("catalog-0") == "node-1"
    reverse = topology.merge(apm, policy)
    assert reverse.kind("catalog-db") is EntityKind.SERVICE and set(reverse.entities) == set(merged.entities)
    assert topology.merge() == topology.Topology()


_small = st.builds(
    lambda doc: topology.from_service_dependencies(doc),
    st.dictionaries(
        st.sampled_from("abcdefgh"), st.fixed_dictionaries({"calls": st.lists(st.sampled_from("abcdefgh"))}), max_size=6
    ),
)
_kinded = st.builds(
    lambda kinds: topology.from_policy({"datastores": kinds}),
    st.dictionaries(st.sampled_from("abcdefgh"), st.sampled_from(["database", "cache"]), max_size=4),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_small | _kinded, max_size=4), st.integers(1, 8), st.integers(1, 8))
def test_merge_is_the_bounded_union_with_every_conflict_and_cut_counted(
    parts: list[topology.Topology], max_entities: int, max_edges: int
) -> None:
    full = topology.merge(*parts)
    ids = {i for p in parts for i in p.entities}
    edges = {(e.source, e.target, e.kind) for p in parts for e in p.edges}
    assert set(full.entities) == ids and {(e.source, e.target, e.kind) for e in full.edges} == edges
    for name, kind in full.entities.items():  # the first source that names an entity gives its kind
        assert kind is next(p.entities[name] for p in parts if name in p.entities)
    conflicts = sum(
        1
        for i, p in enumerate(parts)
        for name, kind in p.entities.items()
        if any(name in q.entities for q in parts[:i]) and kind is not full.entities[name]
    )
    assert full.ignored.get("kind conflict", 0) == conflicts
    assert topology.merge(full) == full  # idempotent
    small = topology.merge(*parts, max_entities=max_entities, max_edges=max_edges)
    assert len(small.entities) <= max_entities and len(small.edges) <= max_edges
    assert len(small.entities) + small.cut.get("entities", 0) == len(ids)
    assert len(small.edges) + small.cut.get("edges", 0) >= len(edges)
