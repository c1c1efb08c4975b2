"""Locate: where in the GitOps repository the fix of a work item lives.

Paths always come from the repository's own listing, never from signal text: a target such as
``../../.gitlab-ci.yml`` can only narrow a choice among files that exist, are allowed, and hold the pin.

What is located: for an ``os_rebuild``, the Dockerfile ``FROM`` on the scanned OS release (its image resolved
through the ARG defaults, ``fixloop.core.change.dockerfile``; a stage name is not an image; for an image of
``fixloop.yaml`` ``images:`` that runs on another one, an internal base, the FROM of the base's Dockerfile its
operating system comes from: ``runtime_dockerfile``), else the workload
manifests that run the scanned image (a manifest's ``image:``, a Kustomization's ``images:`` entry, the
``repository``/``tag`` of a Helm values file or a Flux HelmRelease's ``spec.values``); for a ``dependency_bump``,
the pin in requirements*.txt, pyproject.toml (PEP 621, Poetry), Pipfile, package.json + package-lock.json, go.mod
or pom.xml (the ``<version>`` or the ``${property}`` it names). A package only a lockfile pins (poetry.lock,
Pipfile.lock, uv.lock: a transitive dependency, or a manifest range) is not fixable, with the command that is.
Which of several files pinning a package: the scanned one (``_choose``); for a ``per-package`` work item every
file of the repository that pins it at a version the scans reported (the manifests the scans did not cover too);
for a ``per-service`` one every such file of its service (``fixloop.core.triage.grouping``).
"""

from __future__ import annotations

import json
import posixpath
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

from packageurl import PackageURL
from packaging.utils import canonicalize_name
from pydantic import BaseModel, ConfigDict
from ruamel.yaml import YAML

from fixloop.core.change.dockerfile import stages
from fixloop.core.change.edit import (
    PROPERTY_REF,
    PomDependency,
    go_requires,
    pom_dependencies,
    pom_parent,
    pom_properties,
    python_lock_pins,
    python_pins,
    spec_version,
    toml_pins,
)
from fixloop.core.change.images import ImageSpec
from fixloop.core.change.ops import PolicyViolation, check_path
from fixloop.core.change.policy import Policy
from fixloop.core.models import EndOfLifeFacts, Signal, WorkItem, WorkItemKind
from fixloop.core.parsing import clean
from fixloop.core.products import RUNTIME_IMAGES
from fixloop.core.service import image_repository, service_of_paths


class RepoView(Protocol):
    """A read-only view of the repository at one commit."""

    def list(self) -> Iterable[str]:
        """Every file path (relative, ``/``-separated)."""
        ...

    def read(self, path: str) -> str | None:
        """The text of ``path``, None if there is no such file."""
        ...


@dataclass(frozen=True)
class MappingRepo:
    """A ``RepoView`` over ``{path: text}`` (e.g. ``fixloop.sandbox.seed.seed_files()``)."""

    files: Mapping[str, str]

    def list(self) -> Iterable[str]:
        return sorted(self.files)

    def read(self, path: str) -> str | None:
        return self.files.get(path)


def as_repo(repo: RepoView | Mapping[str, str]) -> RepoView:
    return MappingRepo(repo) if isinstance(repo, Mapping) else repo


class NotFixable(BaseModel):
    """A package (or image) of the work item no operation fixes, and why (a sentence for the MR and Jira)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    package: str
    reason: str


@dataclass(frozen=True)
class Site:
    """One place a fix goes: a FROM line (``kind="image"``, ``current`` the full image reference); a workload's
    image tag (``"workload"``: ``name`` the image as the file writes it, ``current`` its tag) or a Helm value
    (``"helm"``: ``key`` and ``document`` of the tag, ``name`` the image); or a package pin (``current`` the version
    as the file writes it; Maven: ``property`` when the POM's version is ``${property}``, ``shares`` the other
    dependencies that property versions)."""

    kind: Literal["image", "workload", "helm", "pypi", "npm", "go", "maven"]
    path: str
    name: str
    current: str
    stage: int = 0
    lockfile: str | None = None
    direct: bool = True
    key: str | None = None
    document: int = 0
    property: str | None = None
    shares: tuple[str, ...] = ()
    signals: tuple[Signal, ...] = ()


@dataclass
class Located:
    sites: list[Site] = field(default_factory=list)
    not_fixable: list[NotFixable] = field(default_factory=list)


def _files(repo: RepoView, policy: Policy, pattern: str) -> list[str]:
    """Repository files whose name matches ``pattern`` and which the policy lets fixloop change (sorted)."""
    out = []
    for path in repo.list():
        try:
            check_path(path)
        except PolicyViolation:
            continue
        if re.fullmatch(pattern, path.rsplit("/", 1)[-1]) and policy.allows(path):
            out.append(path)
    return sorted(out)


def _choose(paths: list[str], item: WorkItem) -> list[str] | None:
    """Among several candidate files: all of them when they are in one directory (one project); else those of the
    work item's service (the artifact's image or directory name is a directory of the path); else those its target
    names when it names a file path (exactly, else as a suffix, else a lockfile's directory); else None
    (ambiguous)."""
    if len(paths) < 2 or len({posixpath.dirname(p) for p in paths}) == 1:
        return paths
    for hint in (item.artifact, item.service):
        name = (hint or "").split("@")[0].rstrip("/").split("/")[-1].split(":")[0]
        by_service = [p for p in paths if name and name in p.split("/")[:-1]]
        if by_service:
            paths = by_service
            break
    if len(paths) < 2:
        return paths
    # Snyk on Windows names "project-a\\pom.xml"; osv-scanner an absolute path
    target = (item.target or "").strip().replace("\\", "/").removeprefix("./").lstrip("/")
    if re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._/-]*", target) and ".." not in target:
        for by_target in (
            [p for p in paths if p == target],
            [p for p in paths if p.endswith("/" + target)],
            [p for p in paths if _in_dir(p, posixpath.dirname(target))],
        ):
            if by_target:
                return by_target
    return None


def _chosen(paths: list[str], item: WorkItem) -> list[str] | None:
    """The files of ``paths`` (each pinning a package of ``item`` at a version its scans reported) the bump goes
    to: all of them for a ``per-package`` item; those of its service for a ``per-service`` one (``_choose`` when
    none is in its folder); else the scanned one (``_choose``)."""
    if item.grouping == "per-package":
        return paths
    if item.grouping == "per-service" and item.service:
        own = [p for p in paths if service_of_paths([p]) == item.service]
        if own:
            return own
    return _choose(paths, item)


def _in_dir(path: str, directory: str) -> bool:
    d = posixpath.dirname(path)
    return bool(directory) and (d == directory or d.endswith("/" + directory))


def _listing(paths: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


# ---------------------------------------------------------------- os_rebuild

_OS_IN_TARGET = re.compile(r"\(([a-z][a-z0-9._-]*) ([0-9][A-Za-z0-9._+~-]*)\)\s*$")
OS_IMAGES = {  # scanner OS family -> the official image repositories of that OS
    "alpine": ("alpine",),
    "debian": ("debian",),
    "ubuntu": ("ubuntu",),
    "centos": ("centos",),
    "rocky": ("rockylinux",),
    "almalinux": ("almalinux",),
    "amazon": ("amazonlinux",),
    "oracle": ("oraclelinux",),
    "photon": ("photon",),
    "fedora": ("fedora",),
    "wolfi": ("wolfi-base",),
    "redhat": ("ubi", "ubi-minimal", "ubi-micro", "ubi-init", "ubi8", "ubi9"),  # registry.access.redhat.com/ubi9/...
}


_OS_TARGET = re.compile(r"([a-z][a-z0-9._-]*) ([0-9][A-Za-z0-9._+~-]*)")  # Grype's target: ``debian 10``
_DISTRO = re.compile(r"([a-z][a-z0-9._]*?)-([0-9][\w.+~]*)")  # a purl's ``distro=rhel-9.1``, ``wolfi-20221118``
_OS_FAMILIES = {"rhel": "redhat", "ubi": "redhat", "amzn": "amazon", "ol": "oracle", "sles": "suse"}


def _family(name: str) -> str:
    return _OS_FAMILIES.get(name.lower(), name.lower())


def purl_distro(purl: str | None) -> tuple[str, str] | None:
    """The ``(family, version)`` of an OS package's purl-spec ``distro`` qualifier (parsed with
    ``packageurl-python``): ``pkg:rpm/rhel/nspr@4.34?distro=rhel-9.1`` -> ``("redhat", "9.1")``,
    ``pkg:deb/debian/libc6@2.28?distro=debian-10`` -> ``("debian", "10")``, Trivy's ``pkg:apk/alpine/musl@1.1
    ?distro=3.9.4`` (a version only: the namespace is the family) -> ``("alpine", "3.9.4")``; None for another purl,
    one without the qualifier or one that does not parse."""
    if not purl or not purl.startswith(("pkg:deb/", "pkg:rpm/", "pkg:apk/")):
        return None
    try:
        parsed = PackageURL.from_string(purl)
    except ValueError:
        return None
    qualifiers = parsed.qualifiers if isinstance(parsed.qualifiers, dict) else {}
    distro = str(qualifiers.get("distro") or "")
    if m := _DISTRO.fullmatch(distro):
        return _family(m.group(1)), m.group(2)
    if re.fullmatch(r"[0-9][\w.+~]*", distro) and parsed.namespace:
        return _family(parsed.namespace), distro
    return None


_IMAGE_OS = {image: family for family, images in OS_IMAGES.items() for image in images}


def os_of_image(ref: str | None) -> tuple[str, str] | None:
    """The ``(family, release)`` an official OS image reference names: ``debian:10`` -> ``("debian", "10")``,
    ``debian:10.13-slim`` -> ``("debian", "10.13")``, ``registry.access.redhat.com/ubi8/ubi-minimal:8.7`` ->
    ``("redhat", "8.7")``; None for another image, a codename (``debian:buster``) or a reference without a tag."""
    image = split_image(ref)
    if image is None:
        return None
    family = _IMAGE_OS.get(image[0].rsplit("/", 1)[-1])
    m = re.match(r"[0-9]+(?:\.[0-9]+)*", image[1])
    return (family, m.group()) if family and m else None


def scanned_os(signals: Sequence[Signal]) -> tuple[str, str] | None:
    """The ``(family, version)`` of the scanned OS, the most common one across ``signals``: Trivy's ``<image>
    (alpine 3.9.4)`` target, Grype's ``debian 10`` target, else the ``distro`` qualifier of an OS package's purl
    (``purl_distro``: Grype's deb, rpm and apk packages, wolfi and RHEL included; Trivy's apk; the purl the Snyk
    parser builds from a container vulnerability's ``packageManager``, ``debian:11``). RHEL (``rhel``,
    ``redhat``) is ``redhat``."""
    found: Counter[tuple[str, str]] = Counter()
    for s in signals:
        if s.target and (m := _OS_IN_TARGET.search(s.target) or _OS_TARGET.fullmatch(s.target.strip())):
            found[(_family(m.group(1)), m.group(2))] += 1
        elif distro := purl_distro(s.purl):
            found[distro] += 1
    return min(found, key=lambda k: (-found[k], k)) if found else None


def _image_matches(image: str, family: str, version: str) -> bool:
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag or "@" in image:
        return False
    # a scanner naming the release line only (Grype's ``debian 10``) matches its point releases (``debian:10.2``)
    on_release = tag == version or tag.startswith((version + "-", version + "."))
    return name.split("/")[-1] in OS_IMAGES.get(family, (family,)) and on_release


def _dockerfiles(repo: RepoView, policy: Policy) -> list[str]:
    return _files(repo, policy, r"Dockerfile(\..+)?|.+\.[Dd]ockerfile")


def base_image_sites(
    family: str, version: str, repo: RepoView, policy: Policy, signals: Sequence[Signal] = ()
) -> list[Site]:
    """Every FROM line of the Dockerfiles fixloop may change whose image is the official image of OS ``family`` on
    release ``version`` (``debian:10.2`` for ``debian`` ``10``; through ARG defaults, one site per ARG), in path
    order: an ended line's blast radius, and the sites of a rebuild or a migration."""
    sites = []
    for path in _dockerfiles(repo, policy):
        through: set[tuple[str, str]] = set()  # (ARG, image) whose tag a site already changes
        for stage in stages(repo.read(path) or ""):
            if stage.image is None or not _image_matches(stage.image, family, version):
                continue
            if stage.tag_arg and (stage.tag_arg, stage.image) in through:
                continue  # its tag is the same ARG default: the edit of the first stage changes it too
            if stage.tag_arg:
                through.add((stage.tag_arg, stage.image))
            name = stage.image.rpartition(":")[0]
            sites.append(Site("image", path, name, stage.image, stage=stage.index, signals=tuple(signals)))
    return sites


def migration_base(facts: EndOfLifeFacts | None, signals: Sequence[Signal]) -> tuple[str, str] | None:
    """What the FROM lines an ``eol_migration`` of ``facts`` moves are on, as ``base_image_sites`` takes it: a
    runtime line's official image and ended line (``("python", "3.7")``: ``python:3.7.10-slim``, ``python:3.7``;
    ``fixloop.core.products.RUNTIME_IMAGES``), else the scanned OS family and the ended line (``("debian", "10")``);
    None when the scan names no OS and the line is no runtime's."""
    if facts is not None and facts.cycle and facts.product in RUNTIME_IMAGES:
        return RUNTIME_IMAGES[facts.product], facts.cycle
    os = scanned_os(signals)
    return (os[0], facts.cycle) if os is not None and facts is not None and facts.cycle else os


def locate_base_images(item: WorkItem, signals: Sequence[Signal], repo: RepoView, policy: Policy) -> Located | str:
    """The FROM lines on the scanned OS release (an ``eol_migration``: on its ended line, ``migration_base``: the
    runtime's image on its line for a runtime line); when no Dockerfile has one, for a rebuild the workload
    manifests and Helm values that run the scanned image itself (a third-party image: its own newer tag is the
    fix)."""
    migration = item.kind is WorkItemKind.EOL_MIGRATION
    os = migration_base(item.eol, signals) if migration else scanned_os(signals)
    family, version = os if os is not None else ("", "")
    dockerfiles = _dockerfiles(repo, policy)
    sites = base_image_sites(family, version, repo, policy, signals) if os is not None else []
    if not sites and migration:
        on = f"{family} {version}" if os is not None else "the scanned release"
        return f"no Dockerfile fixloop may change has a FROM on {on}: the image is built elsewhere or on another base"
    if not sites:
        # An image this repository builds (a Dockerfile in a directory named after it) is fixed by rebuilding it,
        # never by deploying whichever newer tag of it the registry lists.
        image = scanned_image(item, signals)
        last = canonical_image(image[0]).rsplit("/", 1)[-1] if image else ""
        built_here = any(last in path.split("/")[:-1] for path in dockerfiles)
        found = "" if built_here else locate_workload_images(item, signals, repo, policy)
        if isinstance(found, Located):
            return found
        if os is None:
            reason = "the scan does not name the operating system release of the image, so its base image is unknown"
        else:
            reason = (
                f"no Dockerfile fixloop may change has a FROM on {family} {version}: the image is probably built on "
                "another base image (rebuild it on a patched one) or its Dockerfile is not in this repository"
            )
        return f"{reason}; {found}" if found else reason
    runtime = runtime_dockerfile(item, signals, repo, policy)
    if runtime is not None and any(s.path == runtime for s in sites):
        return Located([s for s in sites if s.path == runtime])
    paths = sorted({s.path for s in sites})
    chosen = _choose(paths, item)
    if chosen is None:
        return f"several Dockerfiles are FROM {family} {version} ({_listing(paths)}); the scan does not say which"
    return Located([s for s in sites if s.path in chosen])


def _scanned_spec(item: WorkItem, signals: Sequence[Signal], policy: Policy) -> ImageSpec | None:
    """The ``images:`` entry the scanned artifact is: its repository (the artifact without tag or digest, as Docker
    Hub resolves it), else the work item's service."""
    images = policy.chain.images
    found = Counter(s.artifact for s in signals if s.artifact)
    artifact = item.artifact or next(iter(sorted(found, key=lambda a: (-found[a], a))), None)
    if artifact:
        repository = canonical_image(image_repository(artifact))
        spec = next((s for s in images if s.image == repository), None)
        if spec is not None:
            return spec
    names = policy.chain.services()
    return next((s for s in images if item.service and names.get(s.image) == item.service), None)


def runtime_dockerfile(item: WorkItem, signals: Sequence[Signal], repo: RepoView, policy: Policy) -> str | None:
    """The Dockerfile the scanned image's operating system comes from when that image is an ``images:`` entry of
    ``fixloop.yaml`` built on another one (an internal base, ``fixloop.core.change.images.ImageChain.graph``): its
    last stage's image followed through the bases' Dockerfiles to the last internal one (``runtime_chain``); the
    fix of its ``os_rebuild`` goes there, and the base's rebuild then reaches it. None when the scanned image is no
    ``images:`` entry or runs on a public base image itself."""
    spec = _scanned_spec(item, signals, policy)
    if spec is None:
        return None
    names = policy.chain.graph(repo.read).runtime_chain(spec.name)
    base = policy.chain.image(names[-1]) if len(names) > 1 else None
    return base.dockerfile if base is not None else None


# ---------------------------------------------------------------- os_rebuild: the workloads running the image

_DOCKER_HUB = ("docker.io/", "index.docker.io/", "registry-1.docker.io/")
_IMAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9._/:-]{0,254}$")
_IMAGE_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_HELM_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def split_image(ref: object) -> tuple[str, str] | None:
    """``(name, tag)`` of an image reference ``[registry[:port]/]repository:tag[@digest]``, else None (no tag, a
    tarball path, a digest-only reference, characters outside the reference grammar)."""
    if not isinstance(ref, str) or len(ref) > 512:
        return None
    ref = ref.split("@", 1)[0]
    head, _, last = ref.rpartition("/")
    if ":" not in last:
        return None
    repo_last, _, tag = last.partition(":")
    name = f"{head}/{repo_last}" if head else repo_last
    if not _IMAGE_NAME.match(name) or not _IMAGE_TAG.match(tag) or name.endswith((".tar", ".gz", ".tgz")):
        return None
    return name, tag


def canonical_image(name: str) -> str:
    """An image name as Docker Hub resolves it: ``docker.io/library/redis``, ``docker.io/redis`` and ``redis`` are
    one image."""
    for prefix in _DOCKER_HUB:
        name = name.removeprefix(prefix)
    return name.removeprefix("library/")


def scanned_image(item: WorkItem, signals: Sequence[Signal]) -> tuple[str, str] | None:
    """``(name, tag)`` of the scanned image: the work item's artifact, else its signals' most common one, when it
    is an image reference (Trivy's and Grype's ``ArtifactName`` for an image; not a tarball or a directory)."""
    if item.artifact:
        return split_image(item.artifact)
    found = Counter(s.artifact for s in signals if s.artifact)
    for artifact, _ in sorted(found.items(), key=lambda kv: (-kv[1], kv[0])):
        return split_image(artifact)
    return None


def _yaml_documents(text: str) -> list[object]:
    try:
        return list(YAML(typ="safe", pure=True).load_all(text))
    except Exception:  # ruamel raises many error types on bad input; such a file is not a manifest we edit
        return []


def _walk_dicts(node: object) -> Iterator[dict[object, object]]:
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk_dicts(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk_dicts(v)


def _helm_tags(node: object, keys: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], dict[object, object]]]:
    """``(key path, mapping)`` of each mapping with ``repository`` and a string ``tag``, through mappings only (a
    dotted key cannot address a list item)."""
    if not isinstance(node, dict):
        return
    if isinstance(node.get("repository"), str) and isinstance(node.get("tag"), str):
        yield keys, node
    for k, v in node.items():
        if isinstance(k, str) and _HELM_KEY.match(k):
            yield from _helm_tags(v, (*keys, k))


def _workload_sites(path: str, text: str, name: str, tag: str) -> tuple[list[Site], bool]:
    """The sites of ``path`` running image ``name:tag`` (any spelling of the name), and whether a manifest
    ``image:`` or Kustomize entry of the file runs that image at another tag (the workload edit, which changes
    them all, would be refused: those sites are left out)."""
    want = canonical_image(name)
    sites: dict[tuple[str, str, int], Site] = {}
    other = False
    values_file = re.fullmatch(r"values[\w.-]*\.ya?ml", path.rsplit("/", 1)[-1]) is not None
    for d, doc in enumerate(_yaml_documents(text)):
        for node in _walk_dicts(doc):
            images = node.get("images")  # a Kustomization's images: [{name, newTag}]
            for entry in images if isinstance(images, list) else []:
                if isinstance(entry, dict) and isinstance(entry.get("name"), str) and "newTag" in entry:
                    written = entry["name"]
                    if canonical_image(written) != want or "newName" in entry or not _IMAGE_NAME.match(written):
                        continue
                    if str(entry["newTag"]) != tag:
                        other = True
                    sites.setdefault(("workload", written, 0), Site("workload", path, written, tag))
            image = split_image(node.get("image"))
            if image is not None and canonical_image(image[0]) == want:
                if image[1] != tag:
                    other = True
                sites.setdefault(("workload", image[0], 0), Site("workload", path, image[0], tag))
        if values_file:
            roots: list[tuple[tuple[str, ...], object]] = [((), doc)]
        elif isinstance(doc, dict) and doc.get("kind") == "HelmRelease" and isinstance(doc.get("spec"), dict):
            roots = [(("spec", "values"), doc["spec"].get("values"))]
        else:
            roots = []
        for prefix, root in roots:
            for keys, node in _helm_tags(root, prefix):
                registry = node.get("registry")
                full = str(node["repository"])
                if isinstance(registry, str) and registry:
                    full = f"{registry}/{full}"
                if canonical_image(full) != want or not _IMAGE_NAME.match(full) or node["tag"] != tag:
                    continue
                key = ".".join((*keys, "tag"))
                sites.setdefault(("helm", key, d), Site("helm", path, full, tag, key=key, document=d))
    return list(sites.values()), other


def locate_workload_images(item: WorkItem, signals: Sequence[Signal], repo: RepoView, policy: Policy) -> Located | str:
    """The manifests (``image:``, Kustomize ``images:``) and Helm values (values*.yaml, HelmRelease
    ``spec.values``: ``[registry/]repository`` + ``tag``) fixloop may change that run the scanned image at its
    scanned tag; a reason ("" when the artifact is not an image reference) otherwise."""
    image = scanned_image(item, signals)
    if image is None:
        return ""
    name, tag = image
    sites: list[Site] = []
    mixed = []
    last = canonical_image(name).rsplit("/", 1)[-1]
    for path in _files(repo, policy, r".+\.ya?ml"):
        text = repo.read(path) or ""
        if last not in text:  # every spelling of the image ends with it: the file cannot run it, skip parsing
            continue
        found, other = _workload_sites(path, text, name, tag)
        if other and any(s.kind == "workload" for s in found):
            mixed.append(path)
            found = [s for s in found if s.kind != "workload"]
        sites += found
    shown = clean(f"{name}:{tag}", 200)
    if not sites:
        if mixed:
            return f"{_listing(mixed)} also run{'s' if len(mixed) == 1 else ''} {shown} at other tags"
        return f"no manifest or Helm values fixloop may change runs {shown}"
    paths = sorted({s.path for s in sites})
    chosen = _choose(paths, item)
    if chosen is None:
        return f"several manifests run {shown} ({_listing(paths)}); the scan does not say which"
    return Located([replace(s, signals=tuple(signals)) for s in sites if s.path in chosen])


# ---------------------------------------------------------------- dependency_bump

_MANIFESTS = {
    "pypi": r"requirements.*\.txt|pyproject\.toml|Pipfile",
    "npm": r"package-lock\.json",
    "go": r"go\.mod",
    "maven": r"pom\.xml",
}
# Python lockfiles fixloop reads but never writes (their hashes need the package manager): the manifest next to
# each, the command that regenerates it after the manifest changed, and the one that updates a transitive package.
PYTHON_LOCKFILES = {
    "poetry.lock": ("pyproject.toml", "`poetry lock --no-update` (Poetry 2: `poetry lock`)", "`poetry update {name}`"),
    "uv.lock": ("pyproject.toml", "`uv lock`", "`uv lock --upgrade-package {name}`"),
    "Pipfile.lock": ("Pipfile", "`pipenv lock`", "`pipenv lock`"),
}


def _python_pins(repo: RepoView, path: str) -> list[tuple[str, str | None, str]]:
    """``(name, version or None, spec)`` of each entry of a requirements file, pyproject.toml or Pipfile."""
    text = repo.read(path) or ""
    if path.rsplit("/", 1)[-1] in ("pyproject.toml", "Pipfile"):
        try:
            return [(p.name, p.version, p.spec) for p in toml_pins(text, path)]
        except PolicyViolation:  # not valid TOML: nothing to locate there
            return []
    return [(name, version, version) for _, name, version, _ in python_pins(text)]


def _python_sites(repo: RepoView, paths: list[str], package: str, installed: str) -> list[Site]:
    want = canonicalize_name(package)
    sites = {}
    for path in paths:
        for name, version, _ in _python_pins(repo, path):
            if canonicalize_name(name) == want and version == installed:
                sites.setdefault(path, Site("pypi", path, name, version))
    return list(sites.values())


def _python_lock_reason(repo: RepoView, package: str, installed: str) -> str | None:
    """Why a package only a lockfile pins is not fixable (a transitive dependency, or a manifest range the fixed
    version may already satisfy), with the command that fixes it; None when no lockfile pins it."""
    want = canonicalize_name(package)
    for path in repo.list():
        name = path.rsplit("/", 1)[-1]
        if name not in PYTHON_LOCKFILES:
            continue
        try:
            check_path(path)
        except PolicyViolation:
            continue
        locked = python_lock_pins(repo.read(path) or "", path).get(want)
        if locked is None or locked[1] != installed:
            continue
        manifest_name, _, update = PYTHON_LOCKFILES[name]
        manifest = posixpath.join(posixpath.dirname(path), manifest_name)
        command = update.format(name=locked[0])  # the lockfile's own spelling of a name checked by python_lock_pins
        asked = [spec for n, _, spec in _python_pins(repo, manifest) if canonicalize_name(n) == want]
        if asked:
            return (
                f"{manifest} asks for it as {clean(asked[0], 60)!r}, not a pin at {clean(installed, 60)}; only "
                f"{path} pins it, and fixloop does not regenerate lockfiles ({command} does)"
            )
        return (
            f"a transitive dependency: {path} pins it at {clean(installed, 60)} and {manifest} does not ask for it; "
            f"fixloop does not regenerate lockfiles ({command} does)"
        )
    return None


def _go_sites(repo: RepoView, paths: list[str], module: str, installed: str) -> list[Site]:
    return [
        Site("go", path, module, version)
        for path in paths
        for _, mod, version in go_requires(repo.read(path) or "")
        if mod == module and version == installed
    ]


def _npm_sites(repo: RepoView, paths: list[str], package: str, installed: str, policy: Policy) -> list[Site]:
    sites = []
    for lockfile in paths:
        try:
            lock = json.loads(repo.read(lockfile) or "")
        except ValueError:
            continue
        if not isinstance(lock, dict):
            continue
        entries = [
            e
            for k, e in (lock.get("packages") or {}).items()
            if k == f"node_modules/{package}" or k.endswith(f"/node_modules/{package}")
        ] + [e for k, e in (lock.get("dependencies") or {}).items() if k == package]
        if not any(isinstance(e, dict) and e.get("version") == installed for e in entries):
            continue
        manifest = posixpath.join(posixpath.dirname(lockfile), "package.json")
        direct = False
        try:
            doc = json.loads(repo.read(manifest) or "{}")
        except ValueError:
            doc = {}
        for section in ("dependencies", "devDependencies", "optionalDependencies", "peerDependencies"):
            spec = (doc.get(section) or {}).get(package) if isinstance(doc, dict) else None
            if spec is not None and (spec_version(spec) or ("", ""))[1] == installed:
                direct = True
        if direct and not policy.allows(manifest):
            continue
        sites.append(Site("npm", manifest, package, installed, lockfile=lockfile, direct=direct))
    return sites


@dataclass(frozen=True)
class MavenDeclaration:
    """A ``<dependency>`` of a POM of the repository: ``coordinate``, the ``version`` it resolves to (a
    ``${property}``'s value; None when the POMs here do not define it, or it has no version), and what to edit for
    it: ``holder``, the POM with the ``<version>`` or the ``property`` definition (the POM's own, else its parents'
    up the ``<parent>`` chain)."""

    pom: str
    coordinate: str
    version: str | None
    holder: str
    property: str | None = None


def maven_declarations(repo: RepoView) -> list[MavenDeclaration]:
    """Every dependency of every POM of the repository (each POM parsed once; one that is not well-formed or has a
    DOCTYPE is skipped), in path order."""
    parsed: dict[str, tuple[list[PomDependency], dict[str, tuple[str, int, int]], str | None] | None] = {}

    def read(pom: str) -> tuple[list[PomDependency], dict[str, tuple[str, int, int]], str | None] | None:
        if pom not in parsed:
            text = repo.read(pom)
            try:
                check_path(pom)
                parent = pom_parent(text, pom) if text is not None else None
                parsed[pom] = None if text is None else (pom_dependencies(text, pom), pom_properties(text, pom), parent)
            except PolicyViolation:
                parsed[pom] = None
        return parsed[pom]

    def resolve(pom: str, name: str) -> tuple[str, str] | None:
        seen = set()
        current: str | None = pom
        while current is not None and current not in seen and len(seen) < 16:
            seen.add(current)
            found = read(current)
            if found is None:
                return None
            if name in found[1]:
                return current, found[1][name][0]
            current = found[2]
        return None

    out = []
    for pom in _files(repo, Policy(allow=("**/pom.xml",)), r"pom\.xml"):
        found = read(pom)
        for dep in found[0] if found else []:
            ref = PROPERTY_REF.match(dep.version or "")
            if ref is None:
                out.append(MavenDeclaration(pom, dep.coordinate, dep.version, pom))
                continue
            holder = resolve(pom, ref["name"])
            version, where = holder[1] if holder else None, holder[0] if holder else pom
            out.append(MavenDeclaration(pom, dep.coordinate, version, where, ref["name"]))
    return out


def _maven_sites(
    declarations: Sequence[MavenDeclaration], policy: Policy, package: str, installed: str
) -> tuple[list[Site], bool]:
    """The POM entries to change for ``package`` at ``installed`` (a ``<version>``, or the property a ``${...}``
    version names, where it is defined), each with the other dependencies the same property versions; and whether
    any POM declares the package at all (if none does, it is transitive)."""
    sites: dict[tuple[str, str | None], Site] = {}
    users: dict[tuple[str, str | None], set[str]] = {}
    for d in declarations:
        users.setdefault((d.holder, d.property), set()).add(d.coordinate)
        if d.coordinate == package and d.version == installed and policy.allows(d.holder):
            sites.setdefault((d.holder, d.property), Site("maven", d.holder, package, installed, property=d.property))
    out = [
        replace(site, shares=tuple(sorted(users[key] - {package})) if site.property else ())
        for key, site in sorted(sites.items(), key=lambda kv: (kv[0][0], kv[0][1] or ""))
    ]
    return out, any(d.coordinate == package for d in declarations)


def locate_packages(item: WorkItem, signals: Sequence[Signal], repo: RepoView, policy: Policy) -> Located:
    by_package: dict[tuple[str, str, str], list[Signal]] = {}
    for s in sorted(signals, key=lambda s: s.fingerprint):
        if s.package and s.installed_version and s.ecosystem:
            by_package.setdefault((s.ecosystem, s.package, s.installed_version), []).append(s)
    located = Located()
    maven: list[MavenDeclaration] | None = None  # every POM parsed once per work item
    for (eco, package, installed), sigs in sorted(by_package.items()):
        shown = clean(package, 120)
        pattern = _MANIFESTS.get(eco)
        if pattern is None:
            reason = f"fixloop does not edit {clean(eco, 40)} manifests yet"
            located.not_fixable.append(NotFixable(package=shown, reason=reason))
            continue
        paths = _files(repo, policy, pattern)
        declared = True
        if eco == "pypi":
            sites = _python_sites(repo, paths, package, installed)
        elif eco == "go":
            sites = _go_sites(repo, paths, package, installed)
        elif eco == "maven":
            maven = maven_declarations(repo) if maven is None else maven
            sites, declared = _maven_sites(maven, policy, package, installed)
        else:
            sites = _npm_sites(repo, paths, package, installed, policy)
        paths = sorted({s.path for s in sites})
        chosen = _chosen(paths, item)
        if not sites:
            reason = f"no file fixloop may change pins it at {clean(installed, 60)}"
            if eco == "pypi":
                anywhere = _files(repo, Policy(allow=("**",)), pattern)  # pinned where the policy keeps fixloop out?
                if not _python_sites(repo, anywhere, package, installed):
                    reason = _python_lock_reason(repo, package, installed) or reason
            elif not declared:
                reason = (
                    f"no pom.xml declares it: a transitive dependency at {clean(installed, 60)} (fixloop does not add "
                    "a <dependencyManagement> override; bump the dependency that brings it in)"
                )
            located.not_fixable.append(NotFixable(package=shown, reason=reason))
        elif chosen is None:
            reason = (
                f"pinned at {clean(installed, 60)} in several files ({_listing(paths)}); the scan does not say which"
            )
            located.not_fixable.append(NotFixable(package=shown, reason=reason))
        else:
            located.sites += [replace(s, signals=tuple(sigs)) for s in sites if s.path in chosen]
    return located


def locate(item: WorkItem, signals: Sequence[Signal], repo: RepoView, policy: Policy) -> Located | str:
    """Where the fix of ``item`` goes: FROM lines for an ``os_rebuild`` (else the workload manifests and Helm values
    running the scanned image) and an ``eol_migration`` (on its ended line), pins for a ``dependency_bump``
    (requirements*.txt, pyproject.toml, Pipfile, package.json + package-lock.json, go.mod, pom.xml). A reason string
    (for a Jira comment) when nothing is located; packages that cannot be located are listed in ``not_fixable``."""
    if item.kind in (WorkItemKind.OS_REBUILD, WorkItemKind.EOL_MIGRATION):
        return locate_base_images(item, signals, repo, policy)
    if item.kind is WorkItemKind.DEPENDENCY_BUMP:
        return locate_packages(item, signals, repo, policy)
    return f"{item.kind.value} work items are not fixed by a merge request"
