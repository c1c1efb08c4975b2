"""What a reviewer needs beyond the diff (Renovate's merge request body is the reference): for each bumped package
its role in the project (``dependency_roles``: runtime, dev-only or optional; direct or transitive and via which
packages, read from the file the change edits), the target release's date, yanked state and links
(``PackageRelease``, from the package registry: ``fixloop.integrations.pypi``), and for each image the support of
its release line (``Lifecycle``, from endoflife.date: ``fixloop.integrations.endoflife``; ``image_products`` and
``lifecycle`` match an image to it here). Pure: ``fixloop.activities.plan`` does the lookups, hands ``ChangeFacts``
to ``fixloop.core.change.mr.render`` and carries it on the plan's output.

Registry answers are untrusted: a link is kept only when it is an ``http(s)`` URL of at most ``URL_MAX`` characters
made of characters that cannot end a Markdown link or a table cell (``safe_url``), and is labelled by fixloop, never
by the project's own label text; other text is bounded and escaped where it lands. Counts are capped, so
``ChangeFacts`` as JSON stays under ``FACTS_MAX_BYTES`` by construction.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Annotated, Literal

from packaging.utils import canonicalize_name
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator
from pydantic_core import to_json

from fixloop.core.change.edit import go_requires, pom_dependencies, python_pins, toml_pins
from fixloop.core.change.locate import RepoView, as_repo
from fixloop.core.change.ops import (
    BumpBaseImage,
    BumpGoModule,
    BumpMavenDependency,
    BumpNpmPackage,
    BumpPythonPin,
    BumpWorkloadImage,
    Name,
    Operation,
    PackageOp,
    PolicyViolation,
    RepoPath,
    Version,
    subject,
)
from fixloop.core.parsing import clean
from fixloop.core.products import IMAGE_PRODUCTS, LABELS

URL_MAX = 300  # characters of a link kept from a registry answer
LINKS_MAX = 4  # links per release
RELEASES_MAX = 10  # packages looked up per change (the others are shown without their release)
LIFECYCLES_MAX = 6  # release lines per change
ROLES_MAX = 10  # packages whose role is read per change
VIA_MAX = 5  # parents named per transitive package
VIA_NAME_MAX = 100  # characters of a parent's name
REASON_MAX = 200  # characters of a reason or a yank reason
FACTS_MAX_BYTES = 48 * 1024  # ChangeFacts as JSON: the worst case of the caps above fits (tests/change/test_facts.py)

# RFC 3986 characters without ( ) < > [ ] | \ ` " ' and spaces: a URL made of them cannot end a Markdown link
# destination, open HTML or split a table cell. userinfo (``user@host``) is refused: the host is what it looks like.
_URL = re.compile(
    r"^https?://[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}\.)*[A-Za-z0-9-]{1,63}(?::\d{1,5})?"
    r"(?:/[A-Za-z0-9._~!$&*+,;=:@%/-]*)?(?:\?[A-Za-z0-9._~!$&*+,;=:@%/?-]*)?(?:#[A-Za-z0-9._~!$&*+,;=:@%/?-]*)?$"
)
_GROUP = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,59}$")
_PRODUCT = r"^[a-z0-9][a-z0-9.+-]{0,63}$"
_CYCLE = r"^[A-Za-z0-9][A-Za-z0-9.+-]{0,39}$"  # no Markdown in it: shown as it is


def safe_url(value: object) -> str | None:
    """``value`` when it is an ``http``/``https`` URL of at most ``URL_MAX`` characters, with a host and no
    userinfo, made only of characters that cannot end a Markdown link, open HTML or split a table cell; else None
    (``javascript:``, ``data:``, relative or spaced URLs, parentheses, quotes...)."""
    if not isinstance(value, str) or len(value) > URL_MAX:
        return None
    return value if _URL.fullmatch(value) else None


def _url(value: str) -> str:
    if safe_url(value) is None:
        raise ValueError("not an http(s) URL fixloop links")
    return value


def _bounded(value: str | None) -> str | None:
    return clean(value, REASON_MAX) or None if value is not None else None


Reason = Annotated[str | None, AfterValidator(_bounded)]
LinkLabel = Literal["release notes", "changelog", "source", "homepage", "documentation", "PyPI"]


class Link(BaseModel):
    """A link of a release: ``label`` chosen by fixloop from the registry's key (never the project's text), ``url``
    checked by ``safe_url``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    label: LinkLabel
    url: Annotated[str, Field(max_length=URL_MAX), AfterValidator(_url)]


class PackageRelease(BaseModel):
    """The target release of a bumped package as its registry describes it: ``released_at`` (its first file's upload
    time), ``yanked`` and why, ``links`` (release notes or changelog first). ``missing``: why nothing (or not
    everything) is known, as the MR says it (``not looked up: PyPI unreachable``); None when looked up."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ecosystem: Literal["pypi", "npm", "go", "maven"]
    package: Name
    version: Version
    released_at: AwareDatetime | None = None
    yanked: bool = False
    yanked_reason: Reason = None
    links: list[Link] = Field(default_factory=list, max_length=LINKS_MAX)
    missing: Reason = None


class Cycle(BaseModel):
    """One release line of a product on endoflife.date (``cycle`` ``3.9``; ``eol`` its end-of-life date, or True /
    False when the site gives no date; ``codename`` ``Buster``; ``release_date``; ``latest`` its newest release;
    ``extended``: the end of its extended support (Debian LTS, Ubuntu Pro ESM, a vendor's paid support), a date or
    True / False; ``lts``: a long-term-support line)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cycle: Annotated[str, Field(pattern=_CYCLE)]
    eol: date | bool | None = None
    codename: Annotated[str, Field(max_length=60)] | None = None
    release_date: date | None = None
    latest: Annotated[str, Field(max_length=60)] | None = None
    extended: date | bool | None = None
    lts: bool = False


class Lifecycle(BaseModel):
    """The release line an image is on (``label`` ``Alpine``, endoflife.date ``product`` ``alpine``, ``cycle``
    ``3.9``) and its end of life (``eol``: a date, True without one, False not announced); ``newest``: the product's
    newest release line. ``missing``: why it is not known (not looked up, or no such line)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    image: Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[a-z0-9][a-z0-9._/:@-]*$")]
    product: Annotated[str, Field(pattern=_PRODUCT)]
    label: Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9][A-Za-z0-9 .]*$")]
    cycle: Annotated[str, Field(pattern=_CYCLE)] | None = None
    eol: date | bool | None = None
    newest: Annotated[str, Field(pattern=_CYCLE)] | None = None
    missing: Reason = None


Scope = Literal["runtime", "dev", "optional"]


class DependencyRole(BaseModel):
    """What a bumped package is to the project, from the file the change edits: ``scope`` ``runtime``, ``dev``
    (tests, linters, docs: it does not run in the deployed service) or ``optional`` (an extra); ``group`` the
    section, group, extra or file word that says so; ``direct`` False for a transitive dependency, ``via`` the
    packages that bring it in (at most ``VIA_MAX``; ``via_more`` the others)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    package: Name
    path: RepoPath
    scope: Scope = "runtime"
    group: Annotated[str, Field(pattern=_GROUP.pattern)] | None = None
    direct: bool = True
    via: list[Annotated[str, Field(max_length=VIA_NAME_MAX)]] = Field(default_factory=list, max_length=VIA_MAX)
    via_more: Annotated[int, Field(ge=0)] = 0


class ChangeFacts(BaseModel):
    """The facts of one change's merge request, looked up on ``looked_up_on`` (a UTC day: ages and end-of-life
    dates are told relative to it, and a re-run the same day writes the same text). At most ``FACTS_MAX_BYTES`` as
    JSON (checked)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    looked_up_on: date
    roles: list[DependencyRole] = Field(default_factory=list, max_length=ROLES_MAX)
    releases: list[PackageRelease] = Field(default_factory=list, max_length=RELEASES_MAX)
    lifecycles: list[Lifecycle] = Field(default_factory=list, max_length=LIFECYCLES_MAX)

    @model_validator(mode="after")
    def _fits(self) -> ChangeFacts:
        size = len(to_json(self))
        if size > FACTS_MAX_BYTES:
            raise ValueError(f"{size} bytes of JSON, over {FACTS_MAX_BYTES}")
        return self

    def role_of(self, package: str, paths: Sequence[str]) -> DependencyRole | None:
        """The role of ``package`` read from one of ``paths`` (an operation's files)."""
        want = canonicalize_name(package)
        return next((r for r in self.roles if r.path in paths and canonicalize_name(r.package) == want), None)

    def of(self, operations: Sequence[Operation]) -> ChangeFacts:
        """These facts cut to what ``operations`` bump (a model's draft may keep fewer than were looked up)."""
        images = bumped_images(operations)
        packages = {(canonicalize_name(subject(op)), op.new) for op in operations if isinstance(op, PackageOp)}
        paths = {
            (canonicalize_name(subject(op)), p) for op in operations if isinstance(op, PackageOp) for p in op.paths()
        }
        return self.model_copy(
            update={
                "roles": [r for r in self.roles if (canonicalize_name(r.package), r.path) in paths],
                "releases": [r for r in self.releases if (canonicalize_name(r.package), r.version) in packages],
                "lifecycles": [life for life in self.lifecycles if life.image in images],
            }
        )

    def release_of(self, package: str, version: str) -> PackageRelease | None:
        """The looked-up release ``version`` of ``package``."""
        want = canonicalize_name(package)
        return next((r for r in self.releases if canonicalize_name(r.package) == want and r.version == version), None)


# ---------------------------------------------------------------- ages


def ago(then: datetime | date, today: date) -> str:
    """How long before ``today`` ``then`` was (a time is taken by its UTC day), in the largest whole unit:
    ``today``, ``3 days ago``, ``5 months ago``, ``7 years ago``; ``in 2 months`` for a day after ``today``."""
    if isinstance(then, datetime):
        then = then.astimezone(UTC).date()
    days = (today - then).days
    n, future = abs(days), days < 0
    if n == 0:
        return "today"
    if n < 60:
        amount = f"{n} day{'s' if n != 1 else ''}"
    elif n < 730:
        amount = f"{n * 12 // 365} months"
    else:
        amount = f"{n * 100 // 36525} years"
    return f"in {amount}" if future else f"{amount} ago"


# ---------------------------------------------------------------- dependency roles

# A requirements file named for development (requirements-dev.txt, dev-requirements.txt, requirements/test.txt), or
# in a folder named so (docs/requirements.txt, ci/requirements.txt; not services/tests-api/requirements.txt).
_DEV_WORDS = "dev|devel|develop|development|test|tests|testing|lint|linting|docs?|ci|typing|mypy|qa"
_DEV_WORD = re.compile(rf"(?i)(?:^|[-_.])({_DEV_WORDS})(?=[-_.]|$)")
_DEV_FOLDER = re.compile(rf"(?i)^({_DEV_WORDS})$")
_VIA_INLINE = re.compile(r"#\s*via\s+(.+)$")
_VIA_ENTRY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(?:\[[A-Za-z0-9,._ -]*\])?$")


def _dev_word(path: str) -> str | None:
    """The development word of a file's name, or of the folder it is in (``dev``, ``test``, ``docs``, ...)."""
    m = _DEV_WORD.search(posixpath.basename(path)) or _DEV_FOLDER.match(posixpath.basename(posixpath.dirname(path)))
    return m.group(1).lower() if m else None


def _group(value: object) -> str | None:
    s = str(value)
    return s if _GROUP.match(s) else None


def _via_entries(lines: list[str], i: int, rest: str) -> list[str] | None:
    """The ``# via`` entries pip-compile wrote for the pin on line ``i`` (inline, as pip-tools < 5.5 writes them, or
    on the comment lines below it), None when there are none."""
    m = _VIA_INLINE.search(rest)
    if m:
        return [e.strip() for e in m.group(1).split(",") if e.strip()]
    entries: list[str] | None = None
    for line in lines[i + 1 : i + 60]:
        body = line.strip()
        if not body.startswith("#"):
            break
        content = body.lstrip("#").strip()
        if entries is None:
            if not re.match(r"via\b", content):
                break
            entries = [e.strip() for e in content[3:].split(",") if e.strip()]
        elif content:
            entries.append(content)
    return entries


def _from_via(package: str, path: str, entries: list[str]) -> DependencyRole:
    """A pin's role from its ``# via`` entries: an input file (``-r requirements.in``, ``-c ...``, ``app
    (pyproject.toml)``) makes it direct, package names are its parents."""
    inputs = [e for e in entries if e.startswith("-") or "(" in e]
    parents = [e for e in entries if not (e.startswith("-") or "(" in e) and _VIA_ENTRY.match(e)]
    parents = list(dict.fromkeys(p for p in parents if len(p) <= VIA_NAME_MAX))
    word = _dev_word(path)
    return DependencyRole(
        package=package,
        path=path,
        scope="dev" if word else "runtime",
        group=word,
        direct=bool(inputs) or not parents,
        via=[] if inputs else parents[:VIA_MAX],
        via_more=0 if inputs else max(0, len(parents) - VIA_MAX),
    )


def _requirements_role(op: BumpPythonPin, text: str) -> DependencyRole:
    lines = text.splitlines()
    want = canonicalize_name(op.package)
    for i, name, version, rest in python_pins(text):
        if canonicalize_name(name) == want and version == op.current:
            entries = _via_entries(lines, i, rest)
            if entries is not None:
                return _from_via(op.package, op.path, entries)
            break
    word = _dev_word(op.path)
    return DependencyRole(package=op.package, path=op.path, scope="dev" if word else "runtime", group=word)


def _toml_scope(key: tuple[object, ...]) -> tuple[Scope, str | None]:
    """The scope of a pyproject.toml / Pipfile entry from its key path (PEP 621, PEP 735, Poetry, Pipenv)."""
    if key[:2] == ("project", "dependencies") or key[:3] == ("tool", "poetry", "dependencies"):
        return "runtime", None
    if key[:2] == ("project", "optional-dependencies"):
        extra = _group(key[2])
        return ("dev" if extra and _dev_word(extra) else "optional"), extra
    if key[:1] == ("dependency-groups",):  # PEP 735: never part of the built package's requirements
        return "dev", _group(key[1])
    if key[:3] == ("tool", "poetry", "dev-dependencies"):
        return "dev", "dev"
    if key[:3] == ("tool", "poetry", "group"):  # Poetry: the implicit main group is the runtime one
        return ("runtime", None) if key[3] == "main" else ("dev", _group(key[3]))
    if key[:1] == ("packages",):
        return "runtime", None
    if key[:1] == ("dev-packages",):
        return "dev", "dev-packages"
    return "optional", _group(key[0])  # a Pipenv category of its own: installed only when asked for


def _toml_role(op: BumpPythonPin, text: str) -> DependencyRole | None:
    try:
        pins = toml_pins(text, op.path)
    except PolicyViolation:
        return None
    want = canonicalize_name(op.package)
    scopes = [_toml_scope(p.key) for p in pins if canonicalize_name(p.name) == want]
    if not scopes:
        return None
    order = {"runtime": 0, "optional": 1, "dev": 2}
    scope, group = min(scopes, key=lambda s: order[s[0]])  # pinned in several: the widest scope counts
    return DependencyRole(package=op.package, path=op.path, scope=scope, group=group)


_NPM_SECTIONS: tuple[tuple[str, Scope], ...] = (
    ("dependencies", "runtime"),
    ("peerDependencies", "runtime"),
    ("optionalDependencies", "optional"),
    ("devDependencies", "dev"),
)


def _npm_parent(key: str) -> str | None:
    """The package a package-lock ``packages`` key names (``node_modules/a/node_modules/@s/b`` -> ``@s/b``)."""
    name = key.rsplit("node_modules/", 1)[-1] if "node_modules/" in key else ""
    ok = len(name) <= VIA_NAME_MAX and re.fullmatch(r"(@[a-z0-9._~-]+/)?[A-Za-z0-9._~-]+", name)
    return name if ok else None


def _npm_role(op: BumpNpmPackage, repo: RepoView) -> DependencyRole | None:
    try:
        manifest = json.loads(repo.read(op.path) or "{}") if op.direct else {}
        lock = json.loads(repo.read(op.lockfile) or "{}") if op.lockfile else {}
    except ValueError:
        return None
    manifest = manifest if isinstance(manifest, dict) else {}
    lock = lock if isinstance(lock, dict) else {}
    if op.direct:
        for section, scope in _NPM_SECTIONS:
            deps = manifest.get(section)
            if isinstance(deps, dict) and op.package in deps:
                return DependencyRole(package=op.package, path=op.path, scope=scope, group=section)
        return DependencyRole(package=op.package, path=op.path)
    packages = lock.get("packages") if isinstance(lock.get("packages"), dict) else {}
    entries = [
        e
        for k, e in packages.items()
        if isinstance(e, dict) and (k == f"node_modules/{op.package}" or k.endswith(f"/node_modules/{op.package}"))
    ]
    parents: list[str] = []
    for key, entry in sorted(packages.items()):
        if not isinstance(entry, dict) or not key:
            continue
        wants = [entry.get(s) for s in ("dependencies", "optionalDependencies", "peerDependencies")]
        if any(isinstance(w, dict) and op.package in w for w in wants) and (parent := _npm_parent(key)):
            parents.append(parent)
    legacy = lock.get("dependencies") if isinstance(lock.get("dependencies"), dict) else {}  # lockfile v1
    if op.package in legacy and isinstance(legacy[op.package], dict):
        entries.append(legacy[op.package])
    for name, entry in sorted(legacy.items()):
        if isinstance(entry, dict) and isinstance(entry.get("requires"), dict) and op.package in entry["requires"]:
            parents += [p for p in [_npm_parent(f"node_modules/{name}")] if p]
    parents = list(dict.fromkeys(parents))
    dev = bool(entries) and all(e.get("dev") or e.get("devOptional") for e in entries)
    optional = bool(entries) and not dev and all(e.get("optional") for e in entries)
    scope: Scope = "dev" if dev else ("optional" if optional else "runtime")
    return DependencyRole(
        package=op.package,
        path=op.lockfile or op.path,
        scope=scope,
        group="dev" if dev else None,
        direct=False,
        via=parents[:VIA_MAX],
        via_more=max(0, len(parents) - VIA_MAX),
    )


def _go_role(op: BumpGoModule, text: str) -> DependencyRole | None:
    lines = text.splitlines()
    for i, module, version in go_requires(text):
        if module == op.module and version == op.current:
            indirect = re.search(r"//\s*indirect\b", lines[i]) is not None
            return DependencyRole(package=op.module, path=op.path, direct=not indirect)
    return None


def _maven_role(op: BumpMavenDependency, text: str) -> DependencyRole | None:
    if op.property is not None:  # the property may version several dependencies, in other POMs too
        return None
    try:
        deps = [d for d in pom_dependencies(text, op.path) if d.coordinate == op.package]
    except PolicyViolation:
        return None
    if not deps:
        return None
    used = [d for d in deps if not d.managed]  # a <dependencyManagement> entry only pins: its users say the scope
    deps = used or deps
    scopes: set[Scope] = {"dev" if d.scope == "test" else ("optional" if d.optional else "runtime") for d in deps}
    scope: Scope = "runtime" if "runtime" in scopes else ("optional" if "optional" in scopes else "dev")
    return DependencyRole(package=op.package, path=op.path, scope=scope, group="test" if scope == "dev" else None)


def dependency_roles(operations: Sequence[Operation], repo: RepoView | Mapping[str, str]) -> list[DependencyRole]:
    """The role of each package an operation bumps (at most ``ROLES_MAX``), read from ``repo`` before the change:

    * requirements*.txt: dev-only when the file or its folder is named for development (``requirements-dev.txt``,
      ``requirements/test.txt``, ``docs/requirements.txt``); transitive when pip-compile's ``# via`` comments name
      only packages (``# via flask``), direct when they name an input file (``# via -r requirements.in``);
    * pyproject.toml: ``[project] dependencies`` and Poetry's main dependencies are runtime, an
      ``optional-dependencies`` extra optional (dev-only when named for development), PEP 735
      ``[dependency-groups]``, ``[tool.poetry.dev-dependencies]`` and Poetry groups other than ``main`` dev-only;
      Pipfile ``[packages]`` runtime, ``[dev-packages]`` dev-only;
    * package.json section (``devDependencies`` dev-only, ``optionalDependencies`` optional); a lockfile-only
      package is transitive, via the entries that depend on it, dev-only when every entry of it is ``dev`` /
      ``devOptional`` (package-lock v2/v3 ``packages``, v1 ``dependencies``/``requires``);
    * go.mod: ``// indirect`` is transitive; pom.xml: ``<scope>test</scope>`` is dev-only, ``<optional>`` optional.

    A package whose role cannot be read (a POM property, a file that does not parse) gets none."""
    repo = as_repo(repo)
    out: list[DependencyRole] = []
    for op in operations:
        if len(out) >= ROLES_MAX:
            break
        role: DependencyRole | None = None
        if isinstance(op, BumpNpmPackage):
            role = _npm_role(op, repo)
        elif isinstance(op, BumpPythonPin | BumpGoModule | BumpMavenDependency):
            text = repo.read(op.path)
            if text is None:
                continue
            if isinstance(op, BumpGoModule):
                role = _go_role(op, text)
            elif isinstance(op, BumpMavenDependency):
                role = _maven_role(op, text)
            elif posixpath.basename(op.path) in ("pyproject.toml", "Pipfile"):
                role = _toml_role(op, text)
            else:
                role = _requirements_role(op, text)
        if role is not None:
            out.append(role)
    return out


# ---------------------------------------------------------------- images and their release lines

# The OS release a runtime image's tag names (``python:3.11-slim-bookworm``, ``node:20-alpine3.19``).
_CODENAMES = {
    **{c: "debian" for c in ("jessie", "stretch", "buster", "bullseye", "bookworm", "trixie")},
    **{c: "ubuntu" for c in ("xenial", "bionic", "focal", "jammy", "noble")},
}
_VERSION = re.compile(r"^v?(\d+(?:\.\d+)*)")


def bumped_images(operations: Sequence[Operation]) -> list[str]:
    """The image reference each base-image or workload-image operation leaves running (``alpine:3.9.6``), once
    each. A Helm value names only a tag: no image."""
    out = [
        op.new if isinstance(op, BumpBaseImage) else f"{op.image}:{op.new}"
        for op in operations
        if isinstance(op, BumpBaseImage | BumpWorkloadImage)
    ]
    return list(dict.fromkeys(out))


def image_products(image: str) -> list[tuple[str, str, str]]:
    """``(product, label, version or codename)`` of each release line an image reference names: the image's own
    (``alpine:3.9.6`` -> ``("alpine", "Alpine", "3.9.6")``, ``debian:buster-slim`` -> ``("debian", "Debian",
    "buster")``) and the OS its tag names (``python:3.6-alpine3.9`` adds Alpine ``3.9``, ``-bookworm`` Debian).
    Empty for an image fixloop knows no product of, or a digest-only reference."""
    ref = image.split("@", 1)[0]
    name, _, tag = ref.rpartition(":")
    if not name or "/" in tag:
        return []
    last = name.rsplit("/", 1)[-1]
    out: list[tuple[str, str, str]] = []
    parts = tag.split("-")
    if last in IMAGE_PRODUCTS:
        product, label = IMAGE_PRODUCTS[last]
        m = _VERSION.match(parts[0])
        hint = m.group(1) if m else parts[0].lower()
        if hint and hint != "latest":
            out.append((product, label, hint))
    for part in parts[1:] if last in IMAGE_PRODUCTS else []:
        if m := re.fullmatch(r"alpine(\d+\.\d+)", part):
            out.append(("alpine", "Alpine", m.group(1)))
        elif part in _CODENAMES:
            product = _CODENAMES[part]
            out.append((product, LABELS[product], part))
    return list(dict.fromkeys(out))


def match_cycle(hint: str, cycles: Sequence[Cycle]) -> Cycle | None:
    """The release line ``hint`` is on: for a version, the longest cycle it equals or extends (``3.9.6`` -> ``3.9``,
    never ``3.1`` for ``3.10``); for a word, the cycle of that codename (``buster`` -> Debian ``10``, ``jammy`` ->
    Ubuntu ``22.04``, ``Jammy Jellyfish``)."""
    if _VERSION.fullmatch(hint):
        version = hint.lstrip("v")
        found = [c for c in cycles if version == c.cycle or version.startswith(c.cycle + ".")]
        return max(found, key=lambda c: len(c.cycle), default=None)
    word = hint.lower()
    for c in cycles:
        names = {c.cycle.lower(), *(((c.codename or "").lower(), (c.codename or "").lower().split(" ")[0]))}
        if word in names:
            return c
    return None


def newest_cycle(cycles: Sequence[Cycle]) -> Cycle | None:
    """The newest release line: the latest ``release_date``, else the first listed (endoflife.date lists newest
    first)."""
    dated = [c for c in cycles if c.release_date is not None]
    if dated:
        return max(dated, key=lambda c: c.release_date or date.min)
    return cycles[0] if cycles else None


def lifecycle(image: str, product: str, label: str, hint: str, cycles: Sequence[Cycle]) -> Lifecycle:
    """``image``'s release line ``hint`` of ``product`` among ``cycles`` (``missing`` says so when none matches)."""
    found = match_cycle(hint, cycles)
    newest = newest_cycle(cycles)
    if found is None:
        return Lifecycle(
            image=image,
            product=product,
            label=label,
            missing=f"endoflife.date lists no {label} release line for {clean(hint, 40)}",
        )
    return Lifecycle(
        image=image,
        product=product,
        label=label,
        cycle=found.cycle,
        eol=found.eol,
        newest=newest.cycle if newest is not None and newest.cycle != found.cycle else None,
    )
