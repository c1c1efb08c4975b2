"""The image chain of ``fixloop.yaml``: which source folder builds which image, how the built image's tag is made,
how that tag reaches the environments, and the environments in promotion order.

``fixloop.yaml`` (both sections optional)::

    images:                     # one entry per image CI builds from this repository (none: no build is followed)
      catalog:                  # the image's name in fixloop (a DNS label; usually the service)
        source: services/catalog                    # the folder CI builds it from (a repository path, no glob)
        image: registry.sandbox.local/shop/catalog  # the repository reference: no tag, no digest
        tag: semver-patch       # semver-patch (default): the current newTag with its patch + 1; sha: the merge
                                # commit's short SHA (8 hex digits, GitLab's CI_COMMIT_SHORT_SHA); pipeline: the tag
                                # the pipeline reports (fixloop does not compute it)
        delivery: merge-request # merge-request (default): fixloop commits the new tag in a follow-up merge request;
                                # flux-image-automation: wait for Flux's ImageUpdateAutomation commit that sets it
    environments:               # in promotion order (default: [production]); a name or a mapping
      - staging                 # kustomization: apps/staging/kustomization.yaml, flux: flux-system/apps-staging
      - {name: production, kustomization: apps/production/kustomization.yaml, flux: flux-system/apps-production}
                                # window: its own verification window (soak time; default verification.window)

Each environment's Kustomization file holds the tag that runs there (``images: [{name: <image>, newTag: ...}]``,
kustomize's images transformer); ``set_tag`` edits it in place, keeping the rest of the file. A change to files
outside every ``source`` (a manifest, a tag bump) builds nothing (``image_for_paths`` answers no image).

Base-image chains: an image whose ``<source>/Dockerfile`` FROMs another entry's ``image`` (any stage, its reference
resolved through the ARG defaults: ``fixloop.core.change.dockerfile``) is that base's dependent (``ImageChain.graph``;
images that FROM each other are refused, ``ImageCycleError``). A change to a base's source is delivered through its
dependents, not promoted itself (a base runs nowhere): ``Delivery.dependents`` lists them (at most
``DEPENDENTS_MAX``, the others named in ``dependents_cut``), each to be rebuilt FROM the base's new tag
(``rebuild_ops``), and the ``semver-patch`` rule builds on the tag they FROM now (``Delivery.base_tag``). A dependent
that is itself a base has its own dependents in its own delivery, so chains of any depth unfold one level at a time.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from ruamel.yaml import YAML

from fixloop.core.change.dockerfile import Stage, stages
from fixloop.core.change.edit import YamlChange, edit_yaml_values, image_site, image_tag
from fixloop.core.change.ops import BumpBaseImage, PolicyViolation, check_path
from fixloop.core.service import image_repository, service_of_paths
from fixloop.core.verification import parse_duration

TagRule = Literal["semver-patch", "sha", "pipeline"]
DeliveryMode = Literal["merge-request", "flux-image-automation"]
DNS_LABEL = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
# A repository reference without tag or digest: ``[host[:port]/]path`` (distribution-spec name grammar, lower case).
IMAGE_NAME = r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]{1,5})?(/[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*)+$"
# An OCI tag (distribution-spec: ``[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}``).
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
SEMVER = re.compile(r"(v?)(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})")
SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
SHORT_SHA = 8  # GitLab's CI_COMMIT_SHORT_SHA
MAX_IMAGES, MAX_ENVIRONMENTS = 100, 10
DEPENDENTS_MAX = 10  # a base image's dependents followed by its loop (one child loop each); the others are named

ImageKey = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL)]


class ImageChainError(ValueError):
    """A tag that cannot be made by its rule (a current tag that is not ``MAJOR.MINOR.PATCH``, a commit that is not
    a full SHA, no or an invalid tag from the pipeline), or an environment's file without the image's ``newTag``."""


class ImageCycleError(ImageChainError):
    """Images of ``images:`` built FROM each other (``base-a`` FROM ``base-b`` FROM ``base-a``, or an image FROM
    itself): no build order exists. The message names the cycle and the Dockerfiles."""


class ImageSpec(BaseModel):
    """One entry of ``images:`` (see the module docstring); ``name`` is its key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: ImageKey
    source: str = Field(min_length=1, max_length=512)
    image: str = Field(min_length=1, max_length=255)
    tag: TagRule = "semver-patch"
    delivery: DeliveryMode = "merge-request"

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        try:
            return check_path(value.rstrip("/"))
        except PolicyViolation as e:
            raise ValueError(e.reason) from None

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        if not re.fullmatch(IMAGE_NAME, value):
            raise ValueError(f"{value[:80]!r} is not a repository reference (host/path, lower case, no tag or digest)")
        return value

    def builds(self, path: str) -> bool:
        """Whether a change to ``path`` (a repository path) is in this image's ``source`` folder."""
        return path.startswith(self.source + "/")

    @property
    def dockerfile(self) -> str:
        """``<source>/Dockerfile``: the file CI builds the image from, whose FROMs make it a dependent."""
        return f"{self.source}/Dockerfile"


class Environment(BaseModel):
    """One entry of ``environments:``: its ``name``, the Kustomization file that holds its tags (default
    ``apps/<name>/kustomization.yaml``) and the Flux Kustomization that applies it (``namespace/name``, default
    ``flux-system/apps-<name>``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: ImageKey
    kustomization: str = ""
    flux: str = Field(default="", max_length=253, pattern=r"^$|^[a-z0-9-]{1,63}/[a-z0-9.-]{1,253}$")
    window: timedelta | None = Field(default=None, gt=timedelta(0), le=timedelta(hours=24))  # its soak time

    @field_validator("window", mode="before")
    @classmethod
    def _window(cls, value: object) -> object:
        return parse_duration(value)

    @field_validator("kustomization")
    @classmethod
    def _kustomization(cls, value: str) -> str:
        try:
            return check_path(value) if value else value
        except PolicyViolation as e:
            raise ValueError(e.reason) from None

    @model_validator(mode="after")
    def _defaults(self) -> Environment:
        object.__setattr__(self, "kustomization", self.kustomization or f"apps/{self.name}/kustomization.yaml")
        object.__setattr__(self, "flux", self.flux or f"flux-system/apps-{self.name}")
        return self


@dataclass(frozen=True)
class _TagSite:
    """What ``fixloop.core.change.edit.image_site`` needs to find a Kustomization's ``newTag``."""

    path: str
    image: str
    values_key: None = None


class ImageChain(BaseModel):
    """The ``images:`` and ``environments:`` sections of ``fixloop.yaml`` (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    images: tuple[ImageSpec, ...] = Field(default=(), max_length=MAX_IMAGES)
    environments: tuple[Environment, ...] = Field(
        default=(Environment(name="production"),), min_length=1, max_length=MAX_ENVIRONMENTS
    )
    declared: bool = False  # ``environments:`` is in the file (its names are then the Datadog ``env`` tags)

    def services(self) -> dict[str, str]:
        """Each image's repository -> the service it is: the service of its ``source`` folder (``services/<svc>``:
        ``fixloop.core.service.service_of_paths``), else its name."""
        return {spec.image: service_of_paths([f"{spec.source}/"]) or spec.name for spec in self.images}

    @model_validator(mode="after")
    def _distinct(self) -> ImageChain:
        seen: dict[str, str] = {}
        for spec in self.images:
            if spec.image in seen:
                raise ValueError(f"images.{spec.name}.image: {spec.image} is also images.{seen[spec.image]}")
            seen[spec.image] = spec.name
            for other in self.images:
                if other is not spec and (spec.source + "/").startswith(other.source + "/"):
                    raise ValueError(f"images.{spec.name}.source: {spec.source} is inside images.{other.name}.source")
        names = [e.name for e in self.environments]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"environments: {name} is listed twice")
        return self

    @classmethod
    def from_policy(cls, images: object, environments: object) -> ImageChain:
        """The chain of a loaded ``fixloop.yaml``'s ``images:`` mapping and ``environments:`` list (None: absent).
        Raises ``ValueError`` naming the key (``images.catalog.image: ...``, ``environments[1].name: ...``)."""
        raw: dict[str, Any] = {}
        if images is not None:
            if not isinstance(images, dict):
                raise ValueError("images: must be a mapping of names to {source, image, tag, delivery}")
            items = []
            for key, value in images.items():
                if not isinstance(value, dict):
                    raise ValueError(f"images.{str(key)[:63]}: must be a mapping with source and image")
                items.append({**value, "name": key})
            raw["images"] = items
        if environments is not None:
            if not isinstance(environments, list):
                raise ValueError("environments: must be a list of names or {name, kustomization, flux} mappings")
            raw["environments"] = [{"name": e} if isinstance(e, str) else e for e in environments]
            raw["declared"] = True
        try:
            return cls.model_validate(raw)
        except ValidationError as e:
            err = e.errors(include_url=False)[0]
            loc = list(err.get("loc", ()))
            if len(loc) >= 2 and loc[0] == "images" and isinstance(loc[1], int) and loc[1] < len(raw["images"]):
                loc[1] = str(raw["images"][loc[1]]["name"])[:63]
                if loc[2:] == ["name"]:  # the key itself
                    loc, err["msg"] = loc[:2], "the name must be a DNS label (lower case, digits, '-')"
            where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
            msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
            raise ValueError(f"{where}: {msg}"[:300] if where else msg[:300]) from None

    def image(self, name: str) -> ImageSpec | None:
        return next((s for s in self.images if s.name == name), None)

    def environment(self, name: str) -> Environment | None:
        return next((e for e in self.environments if e.name == name), None)

    def image_for_paths(self, paths: list[str] | tuple[str, ...]) -> tuple[ImageSpec, ...]:
        """The images a change to ``paths`` builds, in ``images:`` order: those whose ``source`` folder holds one
        of the paths (sources do not nest, so a path builds at most one). Empty for a change outside every source
        (manifests, a tag bump): such a change skips the build."""
        return tuple(s for s in self.images if any(s.builds(p) for p in paths))

    def graph(self, read: Callable[[str], str | None]) -> ImageGraph:
        """Which images are built FROM which, read from each image's ``<source>/Dockerfile`` (``read(path)``: its
        text, None when absent): every stage whose image (ARG defaults substituted) is another entry's ``image``, at
        a tag, a digest or neither. A FROM of an image this repository does not build is no edge. Cycles are not
        refused here but where the graph is walked (``ImageGraph.check``, ``ImageGraph.order``)."""
        by_image = {s.image: s for s in self.images}
        dependents: dict[str, list[Dependent]] = {s.name: [] for s in self.images}
        bases: dict[str, tuple[str, ...]] = {}
        runtime: dict[str, str | None] = {}
        for spec in self.images:
            text = read(spec.dockerfile)
            found = stages(text) if text else []
            first: dict[str, Dependent] = {}
            for stage in found:
                repository, tag = _reference(stage.image)
                base = by_image.get(repository) if repository else None
                if base is not None and base.name not in first:
                    first[base.name] = Dependent(
                        name=spec.name, image=spec.image, dockerfile=spec.dockerfile, stage=stage.index,
                        current=str(stage.image), tag=tag,
                    )  # fmt: skip
            for name, dependent in first.items():
                dependents[name].append(dependent)
            bases[spec.name] = tuple(first)
            last = _runtime_stage(found)
            repository = _reference(last.image)[0] if last is not None else None
            runtime[spec.name] = by_image[repository].name if repository in by_image else None
        return ImageGraph(
            names=tuple(s.name for s in self.images),
            dependents_of={k: tuple(v) for k, v in dependents.items()},
            bases_of=bases,
            runtime=runtime,
            dockerfiles={s.name: s.dockerfile for s in self.images},
        )


def _reference(image: str | None) -> tuple[str | None, str | None]:
    """``(repository, tag)`` of a resolved FROM image: the tag None when it has none or is pinned by digest (a
    digest is not bumped by tag); ``(None, None)`` for no image (a stage name, an unresolved reference)."""
    if not image:
        return None, None
    repository = image_repository(image).lower()
    if "@" in image:
        return repository, None
    last = image.rsplit("/", 1)[-1]
    tag = last.partition(":")[2] if ":" in last else None
    return repository, tag if tag and TAG.fullmatch(tag) else None


def _runtime_stage(found: list[Stage]) -> Stage | None:
    """The stage the image runs on: the last one, followed through ``FROM <earlier stage>`` to the stage that names
    an image (None: no FROM, or an unresolved one)."""
    stage = found[-1] if found else None
    for _ in range(len(found)):
        if stage is None or stage.earlier is None:
            break
        wanted = stage.earlier.lower()
        stage = next((s for s in reversed(found[: stage.index]) if (s.name or "").lower() == wanted), None)
    return stage if stage is not None and stage.image is not None else None


class Dependent(BaseModel):
    """An image of ``images:`` built FROM another one (its base): ``name`` and repository ``image``, the
    ``dockerfile`` that FROMs the base, the first ``stage`` (0-based) that does and its reference there
    (``current``, ARG defaults substituted) with its ``tag`` (None: untagged or pinned by digest, which fixloop does
    not rebuild by tag)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: ImageKey
    image: str = Field(max_length=255)
    dockerfile: str = Field(max_length=512)
    stage: int = Field(ge=0, le=64)
    current: str = Field(max_length=512)
    tag: str | None = Field(default=None, max_length=128)


@dataclass(frozen=True)
class ImageGraph:
    """What the repository's Dockerfiles say of ``images:`` (``ImageChain.graph``): ``dependents_of[name]``, the
    images built FROM ``name`` (in ``images:`` order), ``bases_of[name]``, the images ``name`` is built FROM,
    ``runtime[name]``, the image of ``images:`` its last stage runs on (None: a public or external image), and each
    image's Dockerfile."""

    names: tuple[str, ...]
    dependents_of: dict[str, tuple[Dependent, ...]]
    bases_of: dict[str, tuple[str, ...]]
    runtime: dict[str, str | None]
    dockerfiles: dict[str, str]

    def dependents(self, name: str) -> tuple[Dependent, ...]:
        """The images built FROM ``name`` (in ``images:`` order); ``ImageCycleError`` when ``name`` is part of, or
        connected to, images that FROM each other."""
        self.check(name)
        return self.dependents_of.get(name, ())

    def check(self, name: str) -> None:
        """Raise ``ImageCycleError`` when a cycle of FROMs is among the images connected to ``name`` (its bases and
        dependents, transitively)."""
        component, todo = {name}, [name]
        while todo:
            here = todo.pop()
            for there in (*self.bases_of.get(here, ()), *(d.name for d in self.dependents_of.get(here, ()))):
                if there not in component:
                    component.add(there)
                    todo.append(there)
        self._refuse_cycle(component)

    def order(self) -> tuple[str, ...]:
        """Every image, each after the images it is built FROM (a base of a base first), else in ``images:``
        order; ``ImageCycleError`` on any cycle."""
        self._refuse_cycle(set(self.names))
        out: list[str] = []
        placed: set[str] = set()
        while len(out) < len(self.names):
            for name in self.names:
                if name not in placed and all(b in placed for b in self.bases_of.get(name, ())):
                    out.append(name)
                    placed.add(name)
        return tuple(out)

    def runtime_chain(self, name: str) -> tuple[str, ...]:
        """``name``, the image of ``images:`` it runs on, the one that runs on, ...: the last is the image whose
        Dockerfile holds the operating system ``name`` runs (stops before a repeat)."""
        out = [name]
        while (nxt := self.runtime.get(out[-1])) is not None and nxt not in out:
            out.append(nxt)
        return tuple(out)

    def _refuse_cycle(self, nodes: set[str]) -> None:
        state: dict[str, int] = {}  # 1: on the current path, 2: done
        for start in (n for n in self.names if n in nodes):
            if state.get(start):
                continue
            path: list[str] = [start]
            stack = [iter(self.bases_of.get(start, ()))]
            state[start] = 1
            while stack:
                nxt = next(stack[-1], None)
                if nxt is None:
                    state[path.pop()] = 2
                    stack.pop()
                elif state.get(nxt) == 1:
                    cycle = [*path[path.index(nxt) :], nxt]
                    files = ", ".join(self.dockerfiles[n] for n in cycle[:-1][:5])
                    raise ImageCycleError(
                        f"images: {' -> '.join(cycle[:6])}: each is built FROM the next ({files}); no build order "
                        "exists"
                    )
                elif not state.get(nxt):
                    state[nxt] = 1
                    path.append(nxt)
                    stack.append(iter(self.bases_of.get(nxt, ())))


def rebuild_ops(text: str, dependent: Dependent, base: ImageSpec, tag: str) -> list[BumpBaseImage]:
    """The operations that rebuild ``dependent`` FROM ``base``'s new ``tag``: every stage of its Dockerfile
    (``text``) FROM ``base.image`` at another tag, each ARG default that holds such a tag once (its edit changes
    every stage using it). Empty when every such stage is already at ``tag``. Raises ``PolicyViolation`` naming the
    Dockerfile when no stage FROMs the base any more, or one FROMs it by digest or untagged (fixloop does not guess
    what to pin it to)."""
    if not TAG.fullmatch(tag):
        raise ImageChainError(f"{tag[:60]!r} is not an OCI tag")
    new = f"{base.image}:{tag}"
    ops: list[BumpBaseImage] = []
    through: set[str] = set()
    seen = False
    for stage in stages(text):
        repository, current = _reference(stage.image)
        if repository != base.image or stage.image is None:
            continue
        seen = True
        if current is None:
            why = f"stage {stage.index} is FROM {stage.image[:120]} without a tag or by digest"
            raise PolicyViolation(why, dependent.dockerfile)
        if current == tag or (stage.tag_arg is not None and stage.tag_arg in through):
            continue
        if stage.tag_arg is not None:
            through.add(stage.tag_arg)
        ops.append(BumpBaseImage(path=dependent.dockerfile, stage=stage.index, current=stage.image, new=new))
    if not seen:
        raise PolicyViolation(f"no stage is FROM {base.image} any more", dependent.dockerfile)
    return ops


def next_tag(rule: TagRule, current: str | None = None, sha: str | None = None, pipeline: str | None = None) -> str:
    """The tag of the image built from commit ``sha``, by ``rule``:

    * ``semver-patch``: ``current`` (the tag that runs now, ``MAJOR.MINOR.PATCH`` with an optional ``v``, no
      pre-release or build suffix) with its patch + 1 (``1.4.2`` -> ``1.4.3``, ``v2.0.9`` -> ``v2.0.10``);
    * ``sha``: the first 8 hex digits of ``sha`` (a full 40- or 64-digit commit SHA), as ``CI_COMMIT_SHORT_SHA``;
    * ``pipeline``: ``pipeline``, the tag the pipeline reports, checked against the OCI tag grammar.

    Raises ``ImageChainError`` naming what is missing or malformed."""
    if rule == "semver-patch":
        m = SEMVER.fullmatch(current or "")
        if m is None:
            shown = "no current tag" if current is None else f"the current tag {current[:60]!r}"
            raise ImageChainError(f"semver-patch: {shown} is not MAJOR.MINOR.PATCH")
        prefix, major, minor, patch = m.groups()
        return f"{prefix}{major}.{minor}.{int(patch) + 1}"
    if rule == "sha":
        if sha is None or not SHA.fullmatch(sha):
            raise ImageChainError(f"sha: {'no commit' if sha is None else repr(sha[:70])} is not a full commit SHA")
        return sha[:SHORT_SHA]
    if pipeline is None or not TAG.fullmatch(pipeline):
        shown = "no tag" if pipeline is None else f"{pipeline[:60]!r}, not an OCI tag"
        raise ImageChainError(f"pipeline: the pipeline reported {shown}")
    return pipeline


def current_tag(text: str, env: Environment, image: str) -> str | None:
    """The ``newTag`` that ``env``'s Kustomization file (``text``) gives ``image``; None when it has no such entry
    (or is not YAML)."""
    return image_tag(text, _TagSite(env.kustomization, image))


def set_tag(text: str, env: Environment, image: str, current: str, new: str) -> str:
    """``env``'s Kustomization file (``text``) with ``image``'s ``newTag`` changed from ``current`` to ``new``, in
    place (quotes, comments and the other entries kept; ``fixloop.core.change.edit.edit_yaml_values``). Raises
    ``ImageChainError`` for a ``new`` that is not an OCI tag, ``PolicyViolation`` naming the file when it holds no
    ``images:`` entry for ``image`` with a ``newTag`` or that entry's tag is not ``current``."""
    if not TAG.fullmatch(new):
        raise ImageChainError(f"{new[:60]!r} is not an OCI tag")
    site = _TagSite(env.kustomization, image)

    def find(docs: list[Any]) -> list[YamlChange]:
        found, _ = image_site(docs, site)
        return [YamlChange(found.document, found.where, current, new, found.label)]

    return edit_yaml_values(text, env.kustomization, find)


class Target(BaseModel):
    """One environment a change is followed into: ``name`` (the Datadog ``env`` tag its verification reads when the
    environments are declared), ``kustomization`` (the repository file holding its tags), ``flux`` (the Flux
    Kustomization ``namespace/name`` that applies it), ``namespace`` (where its workloads run: the file's
    ``namespace:``, ``default`` when it sets none) and ``current_tag`` (the image's ``newTag`` there when the change was
    planned; None for a change that builds no image)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: ImageKey
    kustomization: str = Field(max_length=512)
    flux: str = Field(max_length=317)
    namespace: str = Field(default="default", max_length=63, pattern=DNS_LABEL)
    current_tag: str | None = Field(default=None, max_length=128)
    window: timedelta | None = None  # the environment's verification window, when it sets its own


class Delivery(BaseModel):
    """How a merged change reaches what runs, as ``delivery_of`` plans it.

    * ``image`` set (a change to an image's ``source``): CI builds the image from the merge commit, the new tag
      goes into ``targets`` one after the other (``image.delivery``: a merge request per environment, or Flux's
      image automation), each rolled out and verified before the next; ``targets`` are all the environments, in
      promotion order.
    * ``image`` None (a manifest change, a tag bump): nothing is built; ``targets`` is the one environment the change
      is followed in: the one whose folder holds the changed files (``apps/<env>/...``), else the last one (a change
      to shared manifests, ``apps/base``, reaches every environment at once; the last is where the alerts come from).

    * ``dependents`` set (a change to a base image's source: other images are built FROM it): CI builds it, and
      instead of going into the environments (a base runs nowhere) its new tag goes into each dependent's FROM, one
      merge request per dependent, each then delivered as its own source change; ``targets`` are all the
      environments (``current_tag`` the base's ``newTag`` there, usually None); ``base_tag`` the tag the dependents
      FROM now (the ``semver-patch`` rule's base); ``dependents_cut`` names those over ``DEPENDENTS_MAX``.

    ``workload``: the Deployment whose rollout is checked (the image's name or the change's service; None: no rollout
    check). ``declared``: ``fixloop.yaml`` lists ``environments:`` (then each target's name is its Datadog ``env``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image: ImageSpec | None = None
    workload: str | None = Field(default=None, max_length=253)
    targets: tuple[Target, ...] = Field(min_length=1, max_length=MAX_ENVIRONMENTS)
    declared: bool = False
    dependents: tuple[Dependent, ...] = Field(default=(), max_length=DEPENDENTS_MAX)
    dependents_cut: tuple[Annotated[str, Field(max_length=63)], ...] = Field(default=(), max_length=MAX_IMAGES)
    base_tag: str | None = Field(default=None, max_length=128)

    def tag_before(self) -> str | None:
        """The tag the ``semver-patch`` rule builds on: a base image's ``base_tag`` (the one its dependents FROM),
        else the one the first environment runs."""
        return self.base_tag if self.dependents else self.targets[0].current_tag

    def reference(self, tag: str) -> str:
        """``<image>:<tag>``: what the rollout expects the pod template to run."""
        if self.image is None:
            raise ImageChainError("a change that builds no image has no image reference")
        return f"{self.image.image}:{tag}"


def _namespace(text: str | None) -> str:
    try:
        docs = list(YAML().load_all(text)) if text else []
    except Exception:  # ruamel's errors: a file that is not YAML sets no namespace
        return "default"
    ns = docs[0].get("namespace") if docs and isinstance(docs[0], dict) else None
    return ns if isinstance(ns, str) and re.fullmatch(DNS_LABEL, ns) else "default"


def delivery_of(
    chain: ImageChain,
    paths: list[str] | tuple[str, ...],
    read: Callable[[str], str | None],
    service: str | None = None,
) -> Delivery:
    """The ``Delivery`` of a change to ``paths`` (repository paths) under ``chain``; ``read(path)`` answers a file's
    text at the planned commit (None: absent); ``service``: the change's service (``fixloop.core.service``), the
    workload of a manifest change. Raises ``ImageChainError`` when the change builds more than one image (one merge
    request, one image: split it), or when an environment's file has no ``newTag`` for the built image. A base
    image (other images are built FROM it: ``ImageChain.graph``) is delivered through its dependents (see
    ``Delivery``); ``ImageCycleError`` when the images connected to it FROM each other, ``ImageChainError`` when its
    rule is ``semver-patch`` and no dependent FROMs it at a ``MAJOR.MINOR.PATCH`` tag."""
    built = chain.image_for_paths(paths)
    if len(built) > 1:
        names = ", ".join(s.name for s in built[:5])
        raise ImageChainError(f"the change builds {len(built)} images ({names}); fixloop follows one per change")

    def target(env: Environment, image: ImageSpec | None, required: bool = True) -> Target:
        text = read(env.kustomization)
        tag = None
        if image is not None:
            tag = current_tag(text, env, image.image) if text is not None else None
            if tag is None and required:
                raise ImageChainError(f"{env.kustomization} sets no newTag for {image.image}")
        ns = _namespace(text)
        return Target(
            name=env.name, kustomization=env.kustomization, flux=env.flux, namespace=ns, current_tag=tag,
            window=env.window,
        )  # fmt: skip

    if built:
        spec = built[0]
        dependents = chain.graph(read).dependents(spec.name)
        if dependents:
            return Delivery(
                image=spec, targets=tuple(target(env, spec, required=False) for env in chain.environments),
                declared=chain.declared, dependents=dependents[:DEPENDENTS_MAX],
                dependents_cut=tuple(d.name for d in dependents[DEPENDENTS_MAX:]), base_tag=_base_tag(spec, dependents),
            )  # fmt: skip
        targets = tuple(target(env, spec) for env in chain.environments)
        return Delivery(image=spec, workload=spec.name, targets=targets, declared=chain.declared)
    own = [e for e in chain.environments if any(p.startswith(e.kustomization.rsplit("/", 1)[0] + "/") for p in paths)]
    env = own[0] if len(own) == 1 else chain.environments[-1]
    return Delivery(workload=service, targets=(target(env, None),), declared=chain.declared)


def _base_tag(base: ImageSpec, dependents: tuple[Dependent, ...]) -> str | None:
    """The tag a base image's dependents FROM now: the highest ``MAJOR.MINOR.PATCH`` one (the ``semver-patch``
    rule's base), else the first one. ``ImageChainError`` for ``semver-patch`` when none is ``MAJOR.MINOR.PATCH``."""
    tags = [d.tag for d in dependents if d.tag]
    semver = [(tuple(int(g) for g in m.groups()[1:]), t) for t in tags if (m := SEMVER.fullmatch(t))]
    if semver:
        return max(semver)[1]
    if base.tag == "semver-patch":
        shown = ", ".join(dict.fromkeys(t[:40] for t in tags[:5])) or "no tag"
        raise ImageChainError(
            f"semver-patch: the dependents of {base.name} FROM it at {shown}, not MAJOR.MINOR.PATCH: its next tag "
            "cannot be made (pin them at one, or give it tag: sha)"
        )
    return tags[0] if tags else None
