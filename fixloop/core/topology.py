"""The topology: what runs where and who calls whom, the map root-cause ranking (``fixloop.core.rca``) walks.

Model:
  entities, each an ``id`` (the name alerts carry: a Kubernetes workload or Datadog ``service`` name, a pod name, a
  node or host name) and a ``kind``: ``service``, ``instance`` (a pod, container or other replica; a cache's or a
  database's instance too), ``host`` (a node, VM or machine), ``database``, ``cache``;
  edges, each ``source -> target`` of a ``kind``: ``calls`` (caller -> callee; a service reading a database or cache
  calls it too), ``instance_of`` (instance -> its service, database or cache), ``runs_on`` (instance -> host).

Bounds: at most ``MAX_ENTITIES`` entities and ``MAX_EDGES`` edges (first come, first kept); ``Topology.cut`` counts
what was cut (``entities``, ``edges``) and ``Topology.ignored`` what an adapter did not understand (an unknown node
type or edge label, an edge to an undeclared entity), by name, so nothing is lost without a count.

Adapters, each pure (texts and parsed documents in, ``Topology`` out):
  ``from_kg``: the knowledge-graph JSON of the alert-correlation corpus (``{"nodes": [{"id", "type", ...}],
  "edges": [{"source", "target", "label"}]}``, as published with "Stalled, Biased, and Confused" (FORGE 2026));
  node types and edge labels are mapped by their words (``KG_TYPES``, ``KG_LABELS``), unknown ones ignored and
  counted;
  ``from_policy`` / ``from_policy_text``: the ``topology:`` section of the GitOps repository's ``fixloop.yaml``::

      topology:
        services:                   # a name -> its callees (a list), or a mapping
          storefront: [catalog, payments]
          catalog: {calls: [inventory, catalog-db], instances: [catalog-0], hosts: [node-1]}
        datastores:                 # a name -> database | cache
          catalog-db: database
          sessions: cache
        calls:                      # more edges, as [caller, callee] pairs
          - [payments, sessions]

    every name is 1-253 characters; a callee that is neither a service nor a datastore becomes a service;
  ``from_manifests``: Kubernetes manifests' texts (what Kustomize bases hold): a Deployment, StatefulSet or DaemonSet
  is a service (its ``metadata.name``), a Service names the DNS names it answers (``<name>``, ``<name>.<ns>``,
  ``<name>.<ns>.svc``, ``<name>.<ns>.svc.cluster.local``, each with or without ``:port``, in a URL or not) and routes
  to the workloads its selector matches; a DNS name found in another workload's container ``env`` values, ``args``
  or ``command``, or in a ConfigMap's ``data`` that workload mounts or imports (``envFrom``, ``valueFrom``,
  volumes), makes a ``calls`` edge. Reference: Kubernetes "DNS for Services and Pods"
  (https://kubernetes.io/docs/concepts/services-networking/dns-pod-service/);
  ``from_service_dependencies``: Datadog APM's service map, the answer of ``GET /api/v1/service_dependencies``
  (docs.datadoghq.com/api/latest/service-dependencies/, public beta): an object keyed by service name, each
  ``{"calls": [callee, ...]}``; every name is a service, every listed callee a ``calls`` edge.

``merge(*topologies)``: the union of several sources' entities and edges, under the same bounds; an entity two
sources give different kinds keeps the first one's kind, and the conflict is counted in ``ignored``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from fixloop.core.parsing import yaml_mapping

MAX_ENTITIES = 5000
MAX_EDGES = 20000
NAME_MAX = 253  # a DNS name's length, the longest name Kubernetes gives an object


class EntityKind(StrEnum):
    SERVICE = "service"
    INSTANCE = "instance"
    HOST = "host"
    DATABASE = "database"
    CACHE = "cache"


class EdgeKind(StrEnum):
    CALLS = "calls"
    INSTANCE_OF = "instance_of"
    RUNS_ON = "runs_on"


class Entity(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str = Field(min_length=1, max_length=NAME_MAX)
    kind: EntityKind


class Edge(BaseModel):
    model_config = ConfigDict(frozen=True)

    source: str = Field(min_length=1, max_length=NAME_MAX)
    target: str = Field(min_length=1, max_length=NAME_MAX)
    kind: EdgeKind


class Topology(BaseModel):
    """Entities by id and edges (see the module docstring); ``cut`` and ``ignored`` count what was left out.

    Lookups (``kind``, ``callers``, ``callees``, ``service_of``, ``instances``, ``host_of``, ``hosted``) answer for
    any id, known or not (an unknown id has no kind and no neighbours)."""

    model_config = ConfigDict(frozen=True)

    entities: dict[str, EntityKind] = Field(default_factory=dict)
    edges: list[Edge] = Field(default_factory=list)
    cut: dict[str, int] = Field(default_factory=dict)
    ignored: dict[str, int] = Field(default_factory=dict)

    _out: dict[tuple[EdgeKind, str], list[str]] = PrivateAttr(default_factory=dict)
    _back: dict[tuple[EdgeKind, str], list[str]] = PrivateAttr(default_factory=dict)

    def model_post_init(self, _context: Any) -> None:
        for e in self.edges:
            self._out.setdefault((e.kind, e.source), []).append(e.target)
            self._back.setdefault((e.kind, e.target), []).append(e.source)

    def kind(self, entity: str) -> EntityKind | None:
        return self.entities.get(entity)

    def callees(self, entity: str) -> list[str]:
        return list(self._out.get((EdgeKind.CALLS, entity), ()))

    def callers(self, entity: str) -> list[str]:
        return list(self._back.get((EdgeKind.CALLS, entity), ()))

    def service_of(self, entity: str) -> str | None:
        """The service (database, cache) ``entity`` is an instance of, else None."""
        found = self._out.get((EdgeKind.INSTANCE_OF, entity))
        return found[0] if found else None

    def instances(self, entity: str) -> list[str]:
        return list(self._back.get((EdgeKind.INSTANCE_OF, entity), ()))

    def host_of(self, entity: str) -> str | None:
        found = self._out.get((EdgeKind.RUNS_ON, entity))
        return found[0] if found else None

    def hosted(self, entity: str) -> list[str]:
        return list(self._back.get((EdgeKind.RUNS_ON, entity), ()))

    def counts(self) -> dict[str, int]:
        """Entities per kind and edges per kind, for a summary line."""
        c: dict[str, int] = {}
        for k in self.entities.values():
            c[k.value] = c.get(k.value, 0) + 1
        for e in self.edges:
            c[e.kind.value] = c.get(e.kind.value, 0) + 1
        return c


class _Builder:
    """Collects entities and edges under the bounds; ``build`` freezes them into a ``Topology``."""

    def __init__(self, max_entities: int = MAX_ENTITIES, max_edges: int = MAX_EDGES) -> None:
        self.entities: dict[str, EntityKind] = {}
        self.edges: dict[tuple[str, str, EdgeKind], None] = {}
        self.cut: dict[str, int] = {}
        self.ignored: dict[str, int] = {}
        self.dropped: set[str] = set()  # entities cut by the bound: their edges are cut too, not "unknown"
        self.max_entities = max_entities
        self.max_edges = max_edges

    def skip(self, what: str) -> None:
        self.ignored[what] = self.ignored.get(what, 0) + 1

    def entity(self, name: object, kind: EntityKind, *, replace: bool = False) -> str | None:
        """Add ``name`` as ``kind`` (a known entity keeps its kind unless ``replace``); its id, or None if invalid
        or over the bound."""
        if not isinstance(name, str) or not name or len(name) > NAME_MAX:
            self.skip("invalid name")
            return None
        if name in self.entities:
            if replace:
                self.entities[name] = kind
            return name
        if len(self.entities) >= self.max_entities:
            if name not in self.dropped:
                self.dropped.add(name)
                self.cut["entities"] = self.cut.get("entities", 0) + 1
            return None
        self.entities[name] = kind
        return name

    def edge(self, source: str | None, target: str | None, kind: EdgeKind) -> None:
        if source is None or target is None:  # an endpoint was refused (invalid, or over the bound): counted there
            self.cut["edges"] = self.cut.get("edges", 0) + 1
            return
        if source == target:
            return
        key = (source, target, kind)
        if key in self.edges:
            return
        if len(self.edges) >= self.max_edges:
            self.cut["edges"] = self.cut.get("edges", 0) + 1
            return
        self.edges[key] = None

    def build(self) -> Topology:
        return Topology(
            entities=dict(self.entities),
            edges=[Edge(source=s, target=t, kind=k) for (s, t, k) in self.edges],
            cut=dict(self.cut),
            ignored=dict(self.ignored),
        )


# --- (d) the knowledge graph of the alert-correlation corpus ----------------------------------------------------

# A node type's words -> a kind (first match wins: "Cache_Instance" is an instance of a cache).
KG_TYPES: tuple[tuple[str, EntityKind], ...] = (
    (r"instance|pod|container|replica", EntityKind.INSTANCE),
    (r"host|node|machine|vm|server", EntityKind.HOST),
    (r"database|db|store", EntityKind.DATABASE),
    (r"cache|redis|memcache", EntityKind.CACHE),
    (r"service|app|application|workload", EntityKind.SERVICE),
)
# An edge label -> (kind, reversed): "has_instance" is "instance_of" read backwards, "hosts" is "runs_on" backwards.
KG_LABELS: dict[str, tuple[EdgeKind, bool]] = {
    "control_flow": (EdgeKind.CALLS, False),
    "data_flow": (EdgeKind.CALLS, False),
    "calls": (EdgeKind.CALLS, False),
    "call": (EdgeKind.CALLS, False),
    "depends_on": (EdgeKind.CALLS, False),
    "instance_of": (EdgeKind.INSTANCE_OF, False),
    "has_instance": (EdgeKind.INSTANCE_OF, True),
    "hosted_on": (EdgeKind.RUNS_ON, False),
    "runs_on": (EdgeKind.RUNS_ON, False),
    "deployed_on": (EdgeKind.RUNS_ON, False),
    "hosts": (EdgeKind.RUNS_ON, True),
}


def kg_kind(node_type: object) -> EntityKind | None:
    """The kind of a knowledge-graph node type (``Service``, ``Service_Instance``, ``Host``, ``Cache_Instance``, ...)
    by its words (``KG_TYPES``), else None."""
    if not isinstance(node_type, str):
        return None
    words = node_type.lower().replace("-", "_")
    for pattern, kind in KG_TYPES:
        if re.search(rf"(^|_)({pattern})($|_)", words):
            return kind
    return None


def from_kg(doc: object, *, max_entities: int = MAX_ENTITIES, max_edges: int = MAX_EDGES) -> Topology:
    """The topology of a knowledge-graph document (``json.load`` of a ``*_KG.json``; shape in the module docstring).
    Node attributes are not read. Raises ``ValueError`` for a document that is not ``{"nodes": [...], "edges":
    [...]}``; an unknown node type or edge label is counted in ``ignored`` (``type:<T>``, ``label:<L>``)."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("nodes"), list) or not isinstance(doc.get("edges"), list):
        raise ValueError('knowledge graph: expected {"nodes": [...], "edges": [...]}')
    b = _Builder(max_entities, max_edges)
    for node in doc["nodes"]:
        node = node if isinstance(node, Mapping) else {}
        kind = kg_kind(node.get("type"))
        if kind is None:
            b.skip(f"type:{str(node.get('type'))[:60]}")
            continue
        b.entity(node.get("id"), kind)
    for edge in doc["edges"]:
        edge = edge if isinstance(edge, Mapping) else {}
        label = str(edge.get("label", "")).lower()
        mapped = KG_LABELS.get(label)
        if mapped is None:
            b.skip(f"label:{label[:60]}")
            continue
        kind, backwards = mapped
        source, target = edge.get("source"), edge.get("target")
        if backwards:
            source, target = target, source
        if not isinstance(source, str) or not isinstance(target, str):
            b.skip("edge without a source or target id")
            continue
        if source in b.dropped or target in b.dropped:
            b.cut["edges"] = b.cut.get("edges", 0) + 1
            continue
        if source not in b.entities or target not in b.entities:
            b.skip("edge to an unknown node")
            continue
        b.edge(source, target, kind)
    return b.build()


# --- (a) the topology: section of fixloop.yaml --------------------------------------------------------------------


def _names(value: object, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"fixloop.yaml: topology.{where}: expected a list of names")
    return list(value)


def from_policy(section: object, *, max_entities: int = MAX_ENTITIES, max_edges: int = MAX_EDGES) -> Topology:
    """The topology of a ``topology:`` mapping (schema in the module docstring; None: an empty topology). Raises
    ``ValueError`` naming the key for a malformed section."""
    b = _Builder(max_entities, max_edges)
    if section is None:
        return b.build()
    if not isinstance(section, Mapping):
        raise ValueError("fixloop.yaml: topology: expected a mapping")
    unknown = sorted(set(section) - {"services", "datastores", "calls"})
    if unknown:
        raise ValueError(f"fixloop.yaml: topology.{unknown[0]}: unknown key (services, datastores, calls)")
    stores = section.get("datastores") or {}
    if not isinstance(stores, Mapping):
        raise ValueError("fixloop.yaml: topology.datastores: expected a mapping of name -> database | cache")
    for name, kind in stores.items():
        if kind not in ("database", "cache"):
            raise ValueError(f"fixloop.yaml: topology.datastores.{name}: expected database or cache")
        b.entity(name, EntityKind(kind))
    services = section.get("services") or {}
    if not isinstance(services, Mapping):
        raise ValueError("fixloop.yaml: topology.services: expected a mapping of name -> callees")
    pending: list[tuple[str, str]] = []
    for name, spec in services.items():
        sid = b.entity(name, EntityKind.SERVICE)
        if sid is None:
            raise ValueError(f"fixloop.yaml: topology.services: invalid name {str(name)[:60]!r}")
        if isinstance(spec, Mapping):
            extra = sorted(set(spec) - {"calls", "instances", "hosts"})
            if extra:
                raise ValueError(f"fixloop.yaml: topology.services.{name}.{extra[0]}: unknown key")
            calls = _names(spec.get("calls"), f"services.{name}.calls")
            hosts = [b.entity(h, EntityKind.HOST) for h in _names(spec.get("hosts"), f"services.{name}.hosts")]
            for inst in _names(spec.get("instances"), f"services.{name}.instances"):
                iid = b.entity(inst, EntityKind.INSTANCE)
                b.edge(iid, sid, EdgeKind.INSTANCE_OF)
                for host in hosts:  # every instance may run on any of them: each gets a runs_on edge
                    b.edge(iid, host, EdgeKind.RUNS_ON)
        else:
            calls = _names(spec, f"services.{name}")
        pending += [(sid, callee) for callee in calls]
    extra_calls = section.get("calls") or []
    if not isinstance(extra_calls, list):
        raise ValueError("fixloop.yaml: topology.calls: expected a list of [caller, callee] pairs")
    for i, pair in enumerate(extra_calls):
        if not isinstance(pair, list) or len(pair) != 2 or not all(isinstance(p, str) for p in pair):
            raise ValueError(f"fixloop.yaml: topology.calls[{i}]: expected [caller, callee]")
        pending.append((pair[0], pair[1]))
    for caller, callee in pending:
        b.edge(b.entity(caller, EntityKind.SERVICE), b.entity(callee, EntityKind.SERVICE), EdgeKind.CALLS)
    return b.build()


def from_policy_text(text: str | None) -> Topology:
    """The topology of a whole ``fixloop.yaml`` text (its ``topology:`` key; empty without it). Raises
    ``ValueError`` for a text that is not a YAML mapping or a malformed section."""
    if text is None:
        return Topology()
    return from_policy(yaml_mapping(text).get("topology"))


# --- (b) Kubernetes manifests -----------------------------------------------------------------------------------

WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet"})
_HOSTNAME = re.compile(r"[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?")


def _docs(texts: Iterable[str], b: _Builder) -> list[Mapping[str, Any]]:
    from ruamel.yaml import YAML

    out: list[Mapping[str, Any]] = []
    for text in texts:
        try:
            docs = list(YAML(typ="safe", pure=True).load_all(text))
        except Exception:  # ruamel's YAMLError family: a template or a patch that is not plain YAML
            b.skip("manifest not YAML")
            continue
        for doc in docs:
            if isinstance(doc, Mapping) and isinstance(doc.get("kind"), str):
                if doc["kind"] == "List" and isinstance(doc.get("items"), list):
                    out += [d for d in doc["items"] if isinstance(d, Mapping)]
                else:
                    out.append(doc)
    return out


def _strings(value: object) -> Iterable[str]:
    """Every string inside ``value`` (nested mappings and lists)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _meta(doc: Mapping[str, Any]) -> tuple[str | None, str]:
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), Mapping) else {}
    name = meta.get("name") if isinstance(meta.get("name"), str) else None
    ns = meta.get("namespace") if isinstance(meta.get("namespace"), str) else "default"
    return name, ns


def _pod_spec(doc: Mapping[str, Any]) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    spec = doc.get("spec") if isinstance(doc.get("spec"), Mapping) else {}
    tmpl = spec.get("template") if isinstance(spec.get("template"), Mapping) else {}
    pod = tmpl.get("spec") if isinstance(tmpl.get("spec"), Mapping) else {}
    meta = tmpl.get("metadata") if isinstance(tmpl.get("metadata"), Mapping) else {}
    labels = meta.get("labels") if isinstance(meta.get("labels"), Mapping) else {}
    return pod, labels


def _workload_texts(pod: Mapping[str, Any]) -> tuple[list[str], set[str]]:
    """The strings a pod spec's containers read (env values, args, command) and the ConfigMaps it references."""
    texts: list[str] = []
    for c in [*_list(pod.get("containers")), *_list(pod.get("initContainers"))]:
        if not isinstance(c, Mapping):
            continue
        for env in _list(c.get("env")):
            if isinstance(env, Mapping) and isinstance(env.get("value"), str):
                texts.append(env["value"])
        texts += list(_strings(c.get("args"))) + list(_strings(c.get("command")))
    refs = set(_configmap_refs(pod))
    return texts, refs


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _configmap_refs(value: object) -> Iterable[str]:
    """Names under any ``configMapRef`` / ``configMapKeyRef`` / ``configMap`` key of a pod spec."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            if k in ("configMapRef", "configMapKeyRef", "configMap") and isinstance(v, Mapping):
                if isinstance(v.get("name"), str):
                    yield v["name"]
            else:
                yield from _configmap_refs(v)
    elif isinstance(value, list):
        for v in value:
            yield from _configmap_refs(v)


def from_manifests(texts: Iterable[str], *, max_entities: int = MAX_ENTITIES, max_edges: int = MAX_EDGES) -> Topology:
    """The topology of Kubernetes manifests' texts (each a YAML stream of one or more objects; rules in the module
    docstring). Texts that are not YAML are counted in ``ignored`` (``manifest not YAML``), never raised. A
    ConfigMap referenced by no workload is read by none. Kustomize's name prefixes, namespaces and patches are not
    applied: names and namespaces are those written in the objects (``default`` when none is), so a fully qualified
    DNS name matches only a Service whose namespace is written out; a bare name matches in the caller's namespace."""
    b = _Builder(max_entities, max_edges)
    docs = _docs(texts, b)
    workloads: list[tuple[str, str, Mapping[str, Any], Mapping[str, Any]]] = []
    configmaps: dict[tuple[str, str], list[str]] = {}
    services: list[tuple[str, str, Mapping[str, Any]]] = []
    for doc in docs:
        name, ns = _meta(doc)
        if name is None:
            continue
        if doc["kind"] in WORKLOAD_KINDS:
            pod, labels = _pod_spec(doc)
            workloads.append((name, ns, pod, labels))
            b.entity(name, EntityKind.SERVICE)
        elif doc["kind"] == "ConfigMap":
            configmaps[(ns, name)] = list(_strings(doc.get("data")))
        elif doc["kind"] == "Service":
            spec = doc.get("spec") if isinstance(doc.get("spec"), Mapping) else {}
            selector = spec.get("selector") if isinstance(spec.get("selector"), Mapping) else {}
            services.append((name, ns, selector))
    # DNS name (qualified at least by the namespace) -> the workloads behind it
    dns: dict[str, set[str]] = {}
    for sname, ns, selector in services:
        targets = {
            w
            for (w, wns, _pod, labels) in workloads
            if wns == ns and selector and all(labels.get(k) == v for k, v in selector.items())
        }
        if not targets and any(w == sname and wns == ns for (w, wns, _p, _l) in workloads):
            targets = {sname}
        for host in (f"{sname}.{ns}", f"{sname}.{ns}.svc", f"{sname}.{ns}.svc.cluster.local"):
            dns.setdefault(host, set()).update(targets)
    for name, ns, pod, _labels in workloads:
        texts_read, refs = _workload_texts(pod)
        for ref in sorted(refs):
            texts_read += configmaps.get((ns, ref), [])
        for text in texts_read:
            for host in _hosts_in(text):
                # a bare name is a Service of the caller's own namespace
                for callee in sorted(dns.get(host if "." in host else f"{host}.{ns}", ())):
                    b.edge(name, callee, EdgeKind.CALLS)
    return b.build()


def _hosts_in(text: str) -> set[str]:
    """The host names in a text: each token (split on spaces, commas, quotes, ``=``), its URL scheme, user info,
    path and port stripped."""
    out: set[str] = set()
    for token in re.split(r"[\s,;'\"=()\[\]{}]+", text[:65536]):
        token = re.sub(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", "", token)
        token = token.rsplit("@", 1)[-1].split("/", 1)[0]
        token = re.sub(r":\d{1,5}$", "", token).lower().rstrip(".")
        if token and len(token) <= NAME_MAX and _HOSTNAME.fullmatch(token):
            out.add(token)
    return out


# --- (c) Datadog APM service dependencies -----------------------------------------------------------------------


def from_service_dependencies(doc: object, *, max_entities: int = MAX_ENTITIES, max_edges: int = MAX_EDGES) -> Topology:
    """The topology of a ``GET /api/v1/service_dependencies`` answer (``json.loads`` of it: ``{service: {"calls":
    [callee, ...]}}``, Datadog API reference "Get all APM service dependencies"). Raises ``ValueError`` for a
    document that is not an object; a service whose value has no ``calls`` list is counted in ``ignored``
    (``service without a calls list``), a callee that is not a string too (``callee not a name``), an invalid
    name (empty, over ``NAME_MAX``) as everywhere (``invalid name``)."""
    if not isinstance(doc, Mapping):
        raise ValueError("service dependencies: expected an object keyed by service name")
    b = _Builder(max_entities, max_edges)
    for name, spec in doc.items():
        calls = spec.get("calls") if isinstance(spec, Mapping) else None
        if not isinstance(calls, list):
            b.skip("service without a calls list")
            continue
        caller = b.entity(name, EntityKind.SERVICE)
        if caller is None:
            continue
        for callee in calls:
            if not isinstance(callee, str):
                b.skip("callee not a name")
                continue
            b.edge(caller, b.entity(callee, EntityKind.SERVICE), EdgeKind.CALLS)
    return b.build()


# --- the union of sources -----------------------------------------------------------------------------------------


def merge(*topologies: Topology, max_entities: int = MAX_ENTITIES, max_edges: int = MAX_EDGES) -> Topology:
    """The union of ``topologies``: every entity (an id two of them give different kinds keeps the first kind; each
    such conflict counts one ``kind conflict`` in ``ignored``) and every edge (a duplicate once), first come first
    kept under the bounds. ``cut`` and ``ignored`` are the inputs' counts added up, plus what the merge itself cut
    or ignored (an edge whose endpoint its topology does not declare: ``edge to an unknown entity``)."""
    b = _Builder(max_entities, max_edges)
    for t in topologies:
        for what, n in t.cut.items():
            b.cut[what] = b.cut.get(what, 0) + n
        for what, n in t.ignored.items():
            b.ignored[what] = b.ignored.get(what, 0) + n
    for t in topologies:
        for name, kind in t.entities.items():
            known = b.entities.get(name)
            if known is not None and known is not kind:
                b.skip("kind conflict")
            b.entity(name, kind)
        for e in t.edges:
            if e.source in b.dropped or e.target in b.dropped:
                b.cut["edges"] = b.cut.get("edges", 0) + 1
            elif e.source not in b.entities or e.target not in b.entities:
                b.skip("edge to an unknown entity")
            else:
                b.edge(e.source, e.target, e.kind)
    return b.build()
