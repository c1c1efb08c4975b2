"""Triage as a Temporal activity: ``triage.group_signals`` runs the engines of ``fixloop.core.triage`` on one closed
intake window, handing the ``llm`` engine ``fixloop.integrations.llm.structured_completion`` (its failures become
``LlmTriageFailed``, so the engine falls back to ``rules``).

The topology the ``rules`` engine correlates alerts on (``fixloop.core.topology``) is the activity's own, handed in,
or built on each call from up to three sources merged in this order (``topology.merge``: the first one's kind wins):

* ``fixloop.yaml``: its ``topology:`` section on the default branch of the GitOps repository (GitLab);
* ``manifests``: the Kubernetes manifests of that commit (``topology.from_manifests``): the ``*.yaml``/``*.yml``
  files in or below a folder holding a Kustomization file (every such file when the repository has none), from
  one tree listing; at most ``MANIFEST_FILES`` files of at most ``MANIFEST_FILE_BYTES`` each and
  ``MANIFEST_BYTES`` in all (what is left out is counted in the topology's ``cut``);
* ``datadog``: APM's service map of ``FIXLOOP_DATADOG_SERVICE_DEPENDENCIES_ENV`` over the last hour
  (``GET /api/v1/service_dependencies``), when that is set.

The same ``fixloop.yaml`` names the service of a scanned image (its ``images:`` section: repository -> service,
``fixloop.core.change.images.ImageChain.services``), which with the topology's services is what triage names a
finding item's service from (``fixloop.core.service.ServiceNames``), and which bumps share a work item (its
``grouping:``, ``fixloop.core.triage.grouping``; ``per-manifest`` without the file or when it is malformed).

The end of life of each scanned OS release line and of each runtime line a scanned image's reference names
(``python:3.7.10-slim``: ``fixloop.core.lifecycle``) is looked up on endoflife.date
(``fixloop.integrations.endoflife``) before the engines run, each product once per call (at most
``LIFECYCLE_PRODUCTS_MAX``), its answer kept for the UTC day (``LIFECYCLE_CACHE`` products, least recently used
dropped; a failed lookup is not kept), each lookup a heartbeat: an image on an ended line becomes one
``eol_migration`` work item (``fixloop.core.triage.eol``). endoflife.date down (a transport error, 429 or 5xx: the
rest of the call's products are skipped with the same reason, so a dead site costs one timeout per window), or its
lookups off, never fails triage: the OS items keep their kind and say why their end of life was not checked.

The two repository sources are read once per default-branch head commit: their topology is cached by the head's sha
(``CACHE_COMMITS`` commits, least recently used dropped; a commit whose read failed is not cached), so a call on an
unchanged head costs two requests (the project and its branch); APM is read on each call. The topology never
travels in a Temporal payload. A source that fails (a GitLab or Datadog error, a malformed ``fixloop.yaml``) is a
warning naming the source and the error, and the others still count; no source configured, or every one failing:
no topology, per-monitor work items (never a failed triage).
"""

from __future__ import annotations

import asyncio
import functools
import posixpath
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel
from pydantic_core import to_json
from temporalio import activity
from temporalio.exceptions import ApplicationError

from fixloop.activities.heartbeat import heartbeat, in_thread
from fixloop.activities.plan import GitLabRepo, _not_looked_up
from fixloop.core.change.facts import Cycle
from fixloop.core.change.locate import Located, RepoView, locate
from fixloop.core.change.policy import POLICY_FILE, Policy, load_policy
from fixloop.core.config import ConfigError, LlmSettings
from fixloop.core.lifecycle import Lifecycles, products
from fixloop.core.metrics import TRIAGE_FALLBACKS
from fixloop.core.models import DEFAULT_GROUPING, FIX_KINDS, Grouping, RecentDeploy, Signal, TriageResult
from fixloop.core.naming import located
from fixloop.core.parsing import clean
from fixloop.core.rca import Background
from fixloop.core.service import ServiceNames, service_of_paths
from fixloop.core.topology import Topology, from_manifests, from_policy_text, from_service_dependencies, merge
from fixloop.core.triage import LlmTriageFailed
from fixloop.core.triage import triage as triage_with
from fixloop.core.triage.eol import scanned_lines
from fixloop.core.triage.rules import DEFAULT_INCIDENT_WINDOW
from fixloop.integrations.datadog.api import DatadogClient, DatadogSettings
from fixloop.integrations.endoflife import EndOfLifeClient, EndOfLifeSettings
from fixloop.integrations.errors import IntegrationError, NotFound
from fixloop.integrations.gitlab.api import GitLabClient, GitLabSettings
from fixloop.integrations.llm import LlmError, structured_completion
from fixloop.workflows.contracts.triage import RESULT_TOO_LARGE, GroupSignalsInput

# Temporal activity name: unchanged (running histories and the worker's metrics name it).
GROUP_SIGNALS = "triage.group_signals"
RESULT_MAX_BYTES = 768 * 1024  # a triage result as JSON; Temporal refuses a payload over 2 MiB
TREE_ENTRIES = 20_000  # entries of the repository tree listed (200 pages of 100)
MANIFEST_FILES = 300
MANIFEST_FILE_BYTES = 512 * 1024
MANIFEST_BYTES = 8 * 1024 * 1024
CACHE_COMMITS = 8
KUSTOMIZATION_FILES = frozenset({"kustomization.yaml", "kustomization.yml", "Kustomization"})
APM_WINDOW = timedelta(hours=1)
LIFECYCLE_PRODUCTS_MAX = 12  # endoflife.date products looked up per triage call
LIFECYCLE_CACHE = 64  # (product, UTC day) answers kept across calls
LOOKUPS_OFF = "not looked up: endoflife.date lookups are off (FIXLOOP_ENDOFLIFE_ENABLED)"

T = TypeVar("T", bound=BaseModel)


async def _complete(
    settings: LlmSettings, *, system: str, user: str, schema: type[T], json_schema: dict[str, Any] | None = None
) -> T:
    """``structured_completion`` on ``settings``; every ``LlmError`` as ``LlmTriageFailed`` (its reason kept)."""
    try:
        return await structured_completion(settings, system=system, user=user, schema=schema, json_schema=json_schema)
    except LlmError as e:
        raise LlmTriageFailed(str(e)) from e


async def triage(
    signals: Sequence[Signal],
    *,
    engine: str = "rules",
    recent_deploys: Sequence[RecentDeploy] = (),
    llm: LlmSettings | None = None,
    topology: Topology | None = None,
    incident_window: timedelta = DEFAULT_INCIDENT_WINDOW,
    background: Background | None = None,
    names: ServiceNames | None = None,
    on_fallback: Callable[[str], None] | None = None,
    lifecycles: Lifecycles | None = None,
    grouping: Grouping = DEFAULT_GROUPING,
) -> TriageResult:
    """Triage ``signals`` with ``engine`` (``fixloop.core.triage.triage``); the ``llm`` engine on the endpoint
    ``llm`` (None: read from the environment, ``LlmSettings.load``). An ``llm`` engine that is not configured
    raises ``ConfigError``; every failure of a configured one falls back to ``rules`` (noted in each work item);
    an unknown engine raises ``ValueError``. ``topology``/``incident_window``/``background``: the ``rules``
    engine's incident correlation and the alert history it ranks with (None: none); ``names``: what names a finding
    item's service (None: the topology's services); ``on_fallback``: called with the note of an ``llm`` fallback;
    ``lifecycles``: endoflife.date's answers for the scanned OS lines (``LifecycleLookups``; None: not checked);
    ``grouping``: which bumps share a work item (``fixloop.core.triage.grouping``)."""
    run = functools.partial(
        triage_with,
        signals,
        recent_deploys=recent_deploys,
        topology=topology,
        incident_window=incident_window,
        background=background,
        names=names,
        lifecycles=lifecycles,
        grouping=grouping,
    )
    if engine != "llm":
        return await run(engine=engine)
    settings = llm if llm is not None else LlmSettings.load()
    settings.require()
    return await run(
        engine=engine,
        complete=functools.partial(_complete, settings),
        max_entries=settings.max_entries,
        on_fallback=on_fallback,
    )


def _count_fallback(note: str) -> None:
    """In the activity: one more ``fixloop_triage_fallbacks{reason="llm_error"}`` (``fixloop.core.metrics``)."""
    meter = activity.metric_meter()
    meter.create_counter(TRIAGE_FALLBACKS.name, TRIAGE_FALLBACKS.description).add(1, {"reason": "llm_error"})


def read_topology(gitlab: GitLabClient, ref: str | None = None) -> Topology:
    """The topology of ``fixloop.yaml`` at ``ref`` (None: the default branch) of ``gitlab``'s project (empty
    without the file or its ``topology:`` section). Raises ``IntegrationError`` (GitLab) or ``ValueError`` (a
    malformed file)."""
    return read_policy(gitlab, ref)[0]


def read_policy(gitlab: GitLabClient, ref: str | None = None) -> tuple[Topology, dict[str, str], Grouping]:
    """``fixloop.yaml`` at ``ref`` (None: the default branch), read once: its topology (``read_topology``), its
    images' services (repository -> service, ``ImageChain.services``; empty without ``images:``) and its
    ``grouping`` (the default without the key; empty images and the default grouping when the rest of the policy
    is malformed: the topology still counts). Raises ``IntegrationError`` (GitLab) or ``ValueError`` (a malformed
    ``topology:``, or a text that is no YAML mapping)."""
    return policy_parts(gitlab.read_file(POLICY_FILE, ref or gitlab.default_branch()))


def policy_parts(text: str | None) -> tuple[Topology, dict[str, str], Grouping]:
    """A ``fixloop.yaml`` text's (None: no file) topology, images' services and grouping, as ``read_policy`` reads
    them at a commit. Raises ``ValueError`` (a malformed ``topology:``, or a text that is no YAML mapping)."""
    topology = from_policy_text(text)
    try:
        policy = load_policy(text)
    except ValueError:  # the planner reports a malformed policy; triage names no image's service then
        return topology, {}, DEFAULT_GROUPING
    return topology, policy.chain.services(), policy.grouping


def manifest_paths(paths: Sequence[str]) -> list[str]:
    """The manifests among a repository's file ``paths``: the ``*.yaml``/``*.yml`` files (``fixloop.yaml`` and the
    Kustomization files themselves left out) in or below a folder holding a Kustomization file, or every such file
    when no folder holds one; sorted."""
    roots = {posixpath.dirname(p) for p in paths if posixpath.basename(p) in KUSTOMIZATION_FILES}

    def under_a_root(path: str) -> bool:
        folder = posixpath.dirname(path)
        return any(r == "" or folder == r or folder.startswith(f"{r}/") for r in roots)

    return sorted(
        p
        for p in paths
        if p.endswith((".yaml", ".yml"))
        and p != POLICY_FILE
        and posixpath.basename(p) not in KUSTOMIZATION_FILES
        and (not roots or under_a_root(p))
    )


def read_manifests(gitlab: GitLabClient, ref: str) -> Topology:
    """The topology of the Kubernetes manifests at commit ``ref`` (``manifest_paths`` of one recursive tree
    listing, read under the bounds of the module docstring; a file over ``MANIFEST_FILE_BYTES`` is skipped, what
    is left out is counted in ``cut`` as ``manifest files``). Raises ``IntegrationError``."""
    items = gitlab.tree(ref=ref, recursive=True, limit=TREE_ENTRIES + 1)
    cut: dict[str, int] = {"tree entries": 1} if len(items) > TREE_ENTRIES else {}
    paths = [i.path for i in items[:TREE_ENTRIES] if i.type == "blob"]
    return manifest_topology(paths, lambda path, n: gitlab.read_file_head(path, ref, n), cut)


def manifest_topology(
    paths: Sequence[str], read_head: Callable[[str, int], bytes | None], cut: dict[str, int] | None = None
) -> Topology:
    """The topology of the manifests among a repository's file ``paths`` (``manifest_paths``), each read by
    ``read_head(path, n)`` (its first ``n`` bytes, None: no such file) under the bounds of the module docstring;
    ``cut`` counts what the caller already left out (e.g. ``tree entries``), what is left out here is added as
    ``manifest files``. Raises what ``read_head`` raises."""
    cut = dict(cut or {})
    paths = manifest_paths(paths)
    texts: list[str] = []
    total = 0
    for path in paths:
        if len(texts) >= MANIFEST_FILES or total >= MANIFEST_BYTES:
            cut["manifest files"] = cut.get("manifest files", 0) + 1
            continue
        data = read_head(path, min(MANIFEST_FILE_BYTES, MANIFEST_BYTES - total) + 1)
        if data is None:
            continue
        if len(data) > min(MANIFEST_FILE_BYTES, MANIFEST_BYTES - total):
            cut["manifest files"] = cut.get("manifest files", 0) + 1
            continue
        total += len(data)
        texts.append(data.decode("utf-8", errors="replace"))
    found = from_manifests(texts)
    if not cut:
        return found
    merged = dict(found.cut)
    for what, n in cut.items():
        merged[what] = merged.get(what, 0) + n
    return found.model_copy(update={"cut": merged})


def read_service_dependencies(datadog: DatadogClient, env: str) -> Topology:
    """APM's service map of ``env`` over the last ``APM_WINDOW`` as a topology. Raises ``IntegrationError`` (Datadog)
    or ``ValueError`` (an answer that is not an object)."""
    now = time.time()
    return from_service_dependencies(datadog.service_dependencies(env, start=now - APM_WINDOW.total_seconds(), end=now))


def locate_services(
    result: TriageResult,
    signals: Sequence[Signal],
    repo: RepoView,
    policy: Policy,
    warn: Callable[[str, Exception], None],
) -> TriageResult:
    """``result`` with each fix that triage named no service for named after the service its fix is located in
    (``fixloop.core.change.locate`` on ``repo`` under ``policy``; read only; ``naming.located``). A fix not located,
    in several services' files, or whose files cannot be read (``warn(what, error)`` is told) keeps its name."""
    unnamed = [i for i in result.work_items if i.kind in FIX_KINDS and not i.service]
    by_fingerprint = {s.fingerprint: s for s in signals}
    renamed = {}
    for item in unnamed:
        own = sorted((by_fingerprint[f] for f in item.signals if f in by_fingerprint), key=lambda s: s.fingerprint)
        try:
            where = locate(item, own, repo, policy) if own else None
        except (IntegrationError, ValueError) as e:
            warn(f"locating {item.id}", e)
            continue
        if isinstance(where, Located):
            renamed[item.id] = located(item, service_of_paths(site.path for site in where.sites))
    if not renamed:
        return result
    return result.model_copy(update={"work_items": [renamed.get(i.id, i) for i in result.work_items]})


class LifecycleLookups:
    """endoflife.date's release lines of the products a triage call's scanned OS and runtime lines are on
    (``fixloop.core.lifecycle.products``), for the engines (``Lifecycles``). ``client`` None: every product is
    ``LOOKUPS_OFF``. Each product is asked once per call and its answer (or its ``NotFound``) kept for the UTC day
    (``LIFECYCLE_CACHE`` entries); after a transport error, 429 or 5xx the call's other products are skipped with the
    same reason; at most ``LIFECYCLE_PRODUCTS_MAX`` products per call (the rest: not looked up, and why). Never
    raises an ``IntegrationError``: a product without an answer carries the reason. ``today``: the day the lines
    are judged on (default: the UTC day of the call). Thread-safe; blocking."""

    def __init__(self, client: EndOfLifeClient | None, today: Callable[[], date] | None = None) -> None:
        self.client = client
        self.today = today or (lambda: datetime.now(UTC).date())
        self._cache: OrderedDict[tuple[str, date], list[Cycle] | str] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, signals: Sequence[Signal]) -> Lifecycles:
        today = self.today()
        wanted = products(scanned_lines(signals))
        lines: dict[str, list[Cycle] | str] = {}
        down: str | None = None if self.client is not None else LOOKUPS_OFF
        for n, product in enumerate(wanted):
            if down is not None:
                lines[product] = down
                continue
            if n >= LIFECYCLE_PRODUCTS_MAX:
                lines[product] = f"not looked up: over {LIFECYCLE_PRODUCTS_MAX} products in one triage"
                continue
            with self._lock:
                cached = self._cache.get((product, today))
                if cached is not None:
                    self._cache.move_to_end((product, today))
                    lines[product] = cached
                    continue
            lines[product], down = self._look_up(product)
            if down is None:
                with self._lock:
                    self._cache[(product, today)] = lines[product]
                    while len(self._cache) > LIFECYCLE_CACHE:
                        self._cache.popitem(last=False)
        return Lifecycles(today=today, lines=lines)

    def _look_up(self, product: str) -> tuple[list[Cycle] | str, str | None]:
        """(the product's lines or why none, the reason to skip the call's other products: None when the site
        answered)."""
        assert self.client is not None
        try:
            heartbeat(f"look up {product} on endoflife.date")
            return self.client.cycles(product), None
        except NotFound:
            return f"endoflife.date has no product {product}", None
        except IntegrationError as e:
            why = _not_looked_up(e, "endoflife.date")
            activity.logger.warning("endoflife.date lookup of %s: %s", product, clean(e.message, 200))
            return why, why if e.retryable else None


def _warn(source: str, e: Exception) -> None:
    activity.logger.warning(
        "topology source failed, the others still count (%s reading %s: %s)",
        type(e).__name__,
        source,
        clean(str(e), 300),
    )


class TriageActivities:
    """The triage activity; built once by the worker with the ``llm`` engine's settings (None: read from the
    environment when the engine is first asked for), and the topology: ``topology`` as given, else built on each
    call from ``gitlab``'s repository (``fixloop.yaml`` and the manifests, cached per head commit) and ``datadog``'s
    APM service map (when its ``service_dependencies_env`` is set), else none (see the module docstring); the
    grouping: ``grouping`` as given, else the repository's ``fixloop.yaml`` ``grouping:`` (``per-manifest`` without
    one). With ``endoflife`` the scanned OS lines' end of life is looked up there (``LifecycleLookups``; not
    ``enabled``: the work items say it was not looked up); None: not checked at all."""

    def __init__(
        self,
        llm: LlmSettings | None = None,
        *,
        topology: Topology | None = None,
        gitlab: GitLabSettings | None = None,
        datadog: DatadogSettings | None = None,
        endoflife: EndOfLifeSettings | None = None,
        grouping: Grouping | None = None,
    ) -> None:
        self.llm = llm
        self.lifecycles: LifecycleLookups | None = None
        if endoflife is not None:
            self.lifecycles = LifecycleLookups(EndOfLifeClient(endoflife) if endoflife.enabled else None)
        self.topology = topology
        self.grouping = grouping
        self.gitlab = GitLabClient(gitlab) if gitlab is not None and topology is None else None
        apm = topology is None and datadog is not None and datadog.service_dependencies_env is not None
        self.datadog = DatadogClient(datadog) if apm and datadog is not None else None
        self.apm_env = datadog.service_dependencies_env if datadog is not None else None
        self._by_commit: OrderedDict[str, tuple[Topology, dict[str, str], Grouping]] = OrderedDict()
        self._lock = threading.Lock()  # calls run in threads (in_thread: asyncio.to_thread) and may overlap

    def _repository(self) -> tuple[list[Topology], dict[str, str], Grouping | None]:
        """The repository's sources at the default branch's head (cached by its sha), its images' services and its
        grouping (``read_policy``; None when ``fixloop.yaml`` could not be read); blocking."""
        assert self.gitlab is not None
        gitlab = self.gitlab
        try:
            head = gitlab.branch_head(gitlab.default_branch())
        except IntegrationError as e:
            _warn("the default branch", e)
            return [], {}, None
        if head is None:
            return [], {}, None
        with self._lock:
            cached = self._by_commit.get(head)
            if cached is not None:
                self._by_commit.move_to_end(head)
                return [cached[0]], cached[1], cached[2]
        images: dict[str, str] = {}
        groupings: list[Grouping] = []

        def policy() -> Topology:
            topology, found, grouping = read_policy(gitlab, head)
            images.update(found)
            groupings.append(grouping)
            return topology

        readers: tuple[tuple[str, Callable[[], Topology]], ...] = (
            (POLICY_FILE, policy),
            ("manifests", lambda: read_manifests(gitlab, head)),
        )
        found: list[Topology] = []
        for source, read in readers:
            try:
                found.append(read())
            except (IntegrationError, ValueError) as e:
                _warn(source, e)
        grouping = groupings[0] if groupings else None
        if len(found) == len(readers) and grouping is not None:
            with self._lock:
                self._by_commit[head] = (merge(*found), images, grouping)
                while len(self._by_commit) > CACHE_COMMITS:
                    self._by_commit.popitem(last=False)
        return found, images, grouping

    def _apm(self) -> tuple[list[Topology], dict[str, str], Grouping | None]:
        assert self.datadog is not None and self.apm_env is not None
        try:
            return [read_service_dependencies(self.datadog, self.apm_env)], {}, None
        except (IntegrationError, ValueError) as e:
            _warn("datadog service dependencies", e)
            return [], {}, None

    async def _topology(self) -> tuple[Topology | None, dict[str, str], Grouping]:
        """The topology (None: none), the images' services (repository -> service) triage names with, and the
        grouping (the one given, else the repository's, else the default)."""
        if self.topology is not None:
            return self.topology, {}, self.grouping or DEFAULT_GROUPING
        sources = [f for f, on in ((self._repository, self.gitlab), (self._apm, self.datadog)) if on is not None]
        if not sources:
            return None, {}, self.grouping or DEFAULT_GROUPING
        parts = await asyncio.gather(*(in_thread(f) for f in sources))
        found = [t for topologies, _, _ in parts for t in topologies]
        images = {k: v for _, found_images, _ in parts for k, v in found_images.items()}
        grouping = self.grouping or next((g for _, _, g in parts if g is not None), DEFAULT_GROUPING)
        if not found:
            activity.logger.warning("no topology for triage: every configured source failed")
            return None, images, grouping
        return (found[0] if len(found) == 1 else merge(*found)), images, grouping

    def _locate(self, result: TriageResult, signals: Sequence[Signal]) -> TriageResult:
        """``result`` with each fix that triage named no service for named after the service its fix is located in
        (the planner's ``fixloop.core.change.locate`` on the repository at the default branch's head; read only),
        so that its id, title and ``FixloopService`` say which service from the start (``naming.located``). A fix
        not located, in several services' files, or a repository that cannot be read keeps its name (planning
        names it later); blocking."""
        unnamed = [i for i in result.work_items if i.kind in FIX_KINDS and not i.service]
        if not unnamed or self.gitlab is None:
            return result
        try:
            head = self.gitlab.branch_head(self.gitlab.default_branch())
            if head is None:
                return result
            repo = GitLabRepo(self.gitlab, head)
            policy = load_policy(repo.read(POLICY_FILE))
        except (IntegrationError, ValueError) as e:
            _warn("the repository (locating fixes)", e)
            return result
        return locate_services(result, signals, repo, policy, _warn)

    @activity.defn(name=GROUP_SIGNALS)
    async def group_signals(self, inp: GroupSignalsInput) -> TriageResult:
        """Group one window's signals into work items (``triage``). A setup mistake (an unknown engine, an
        unconfigured ``llm``) is a non-retryable ``ApplicationError`` of type ``TriageConfigError``; the intake
        then triages the window with ``rules``. A result over ``RESULT_MAX_BYTES`` of JSON (it would not fit one
        Temporal payload with the child starts it leads to) is a non-retryable ``ApplicationError`` of type
        ``TriageResultTooLarge``: the intake triages the signals again in two halves."""
        heartbeat("read the topology")
        topology, images, grouping = await self._topology()
        lifecycles = None
        if self.lifecycles is not None:
            heartbeat("look up the end of life of the scanned OS release lines")
            lifecycles = await in_thread(self.lifecycles, inp.signals)
        heartbeat(f"triage {len(inp.signals)} signals with {clean(inp.engine, 40)}")
        try:
            result = await triage(
                inp.signals,
                engine=inp.engine,
                recent_deploys=inp.recent_deploys,
                llm=self.llm,
                topology=topology,
                incident_window=inp.incident_window,
                background=inp.background,
                names=ServiceNames.of(topology, images),
                on_fallback=_count_fallback,
                lifecycles=lifecycles,
                grouping=grouping,
            )
        except (ConfigError, ValueError) as e:
            raise ApplicationError(str(e), type="TriageConfigError", non_retryable=True) from e
        heartbeat(f"locate the fixes of {len(result.work_items)} work item(s)")
        result = await in_thread(self._locate, result, inp.signals)
        size = len(to_json(result))
        if size > RESULT_MAX_BYTES:
            raise ApplicationError(
                f"triage result of {len(inp.signals)} signals is {size} bytes, over {RESULT_MAX_BYTES}",
                type=RESULT_TOO_LARGE,
                non_retryable=True,
            )
        return result
