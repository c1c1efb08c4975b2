"""Typed change operations: the only thing that may turn into a write.

Each operation names one file (``path``, plus ``lockfile`` for npm), the value the file must hold now
(``current``) and the value to write (``new``). Operations come from the planner (or are picked by a model from
the planner's valid ones); ``fixloop.core.change.edit`` applies them and ``fixloop.core.change.policy`` validates the
result.
Values are constrained to the grammar of what they stand for (a version, a tag, a package name), so no value can
carry a newline, a shell metacharacter or markup into a file.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

PATH_MAX = 512


class PolicyViolation(ValueError):
    """A change fixloop refuses to make: the path is not allowed, the file does not hold the expected value, the
    diff is too big, or the result does not parse. ``reason`` is one line for the work item's record; the activity
    raises it as a non-retryable error (retrying cannot change the answer)."""

    def __init__(self, reason: str, path: str | None = None) -> None:
        super().__init__(f"{path}: {reason}" if path else reason)
        self.reason = str(self)
        self.path = path


def check_path(path: str) -> str:
    """``path`` if it is a normalised relative repository path, else ``PolicyViolation``: no absolute path, ``..``,
    ``.`` or empty segment, backslash, NUL or control character, nothing under ``.git/``."""
    if not path or len(path) > PATH_MAX:
        raise PolicyViolation("the path is empty or too long", None)
    shown = path.encode("unicode_escape").decode()[:120]
    if "\\" in path or any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        raise PolicyViolation("backslash or control character in the path", shown)
    if path.startswith("/") or (len(path) > 1 and path[1] == ":"):
        raise PolicyViolation("absolute path", shown)
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise PolicyViolation("the path is not normalised (empty, '.' or '..' segment)", shown)
    if parts[0] == ".git" or ".git" in parts[:-1]:
        raise PolicyViolation("the path is inside .git/", shown)
    return path


RepoPath = Annotated[str, AfterValidator(check_path)]
# A version or tag: PEP 440, semver, Go (v..., +incompatible), Debian (~, epoch :) and OCI tag characters only.
Version = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._+~!:-]*$")]
# A package or module name: PyPI, npm (@scope/name), Go module paths, Maven group:artifact.
Name = Annotated[str, Field(min_length=1, max_length=214, pattern=r"^@?[A-Za-z0-9][A-Za-z0-9._~:/-]*$")]
# An image reference ``[registry/]repository[:tag]``, as written on a FROM line.
ImageRef = Annotated[
    str, Field(min_length=1, max_length=255, pattern=r"^[a-z0-9][a-z0-9._/:-]*:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
]
ImageName = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[a-z0-9][a-z0-9._/:-]*$")]
# A Maven ``groupId:artifactId`` and a POM property name (``guava.version``).
MavenCoordinate = Annotated[
    str, Field(min_length=3, max_length=214, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*:[A-Za-z0-9_][A-Za-z0-9_.-]*$")
]
MavenProperty = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$")]


class _Op(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    path: RepoPath

    def paths(self) -> list[str]:
        """The files this operation may change."""
        return [self.path]


class BumpBaseImage(_Op):
    """The ``stage``-th ``FROM`` line (0-based) of a Dockerfile: image ``current`` -> ``new`` (full references)."""

    op: Literal["bump_base_image"] = "bump_base_image"
    stage: Annotated[int, Field(ge=0, le=64)]
    current: ImageRef
    new: ImageRef

    def describe(self) -> str:
        return f"{self.path}: FROM {self.current} -> {self.new} (stage {self.stage})"


class BumpWorkloadImage(_Op):
    """A Kustomize ``images:`` entry (``name: image``, ``newTag``) or a manifest ``image: image:tag``."""

    op: Literal["bump_workload_image"] = "bump_workload_image"
    image: ImageName
    current: Version
    new: Version

    def describe(self) -> str:
        return f"{self.path}: image {self.image} {self.current} -> {self.new}"


class SetHelmValue(_Op):
    """A scalar at a dotted ``key`` of the ``document``-th (0-based) YAML document of ``path``: ``image.tag`` of a
    chart's values file, ``spec.values.image.tag`` of a Flux ``HelmRelease`` (helm.toolkit.fluxcd.io)."""

    op: Literal["set_helm_value"] = "set_helm_value"
    key: Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")]
    document: Annotated[int, Field(ge=0, le=64)] = 0
    current: Version
    new: Version

    def describe(self) -> str:
        where = f" (document {self.document})" if self.document else ""
        return f"{self.path}: {self.key} {self.current} -> {self.new}{where}"


class BumpPythonPin(_Op):
    """A Python package pin, by the file's name: ``package==current`` in a requirements file; a PEP 621
    requirement (``[project] dependencies``, ``optional-dependencies``, PEP 735 ``[dependency-groups]``) or a Poetry
    constraint (``[tool.poetry.dependencies]`` and its groups) of a ``pyproject.toml``; a ``[packages]`` /
    ``[dev-packages]`` entry of a ``Pipfile``. Lockfiles with hashes (``poetry.lock``, ``Pipfile.lock``) are never
    edited: the plan's notes say how to regenerate them."""

    op: Literal["bump_python_pin"] = "bump_python_pin"
    package: Name
    current: Version
    new: Version

    def describe(self) -> str:
        return f"{self.path}: {self.package} {self.current} -> {self.new}"


class BumpNpmPackage(_Op):
    """An npm package: its spec in ``path`` (package.json) when ``direct``, and its entries in ``lockfile``
    (package-lock.json v2/v3: ``packages`` and legacy ``dependencies``). A transitive-only package (``direct``
    False) changes only the lockfile."""

    op: Literal["bump_npm_package"] = "bump_npm_package"
    lockfile: RepoPath | None = None
    direct: bool = True
    package: Name
    current: Version
    new: Version

    def paths(self) -> list[str]:
        return ([self.path] if self.direct else []) + ([self.lockfile] if self.lockfile else [])

    def describe(self) -> str:
        where = " and ".join(self.paths())
        return f"{where}: {self.package} {self.current} -> {self.new}"


class BumpGoModule(_Op):
    """A ``require`` of a go.mod (single line or block form)."""

    op: Literal["bump_go_module"] = "bump_go_module"
    module: Name
    current: Version
    new: Version

    def describe(self) -> str:
        return f"{self.path}: {self.module} {self.current} -> {self.new}"


class BumpMavenDependency(_Op):
    """A Maven dependency of a ``pom.xml``: the ``<version>`` of its ``<dependency>`` (in ``<dependencies>`` or
    ``<dependencyManagement>``), or, when ``property`` is set, the project ``<properties>`` entry its version
    references (``${property}``; ``path`` is then the POM that defines the property, e.g. the parent)."""

    op: Literal["bump_maven_dependency"] = "bump_maven_dependency"
    package: MavenCoordinate
    property: MavenProperty | None = None
    current: Version
    new: Version

    def describe(self) -> str:
        via = f" (property {self.property})" if self.property else ""
        return f"{self.path}: {self.package} {self.current} -> {self.new}{via}"


Operation = Annotated[
    BumpBaseImage
    | BumpWorkloadImage
    | SetHelmValue
    | BumpPythonPin
    | BumpNpmPackage
    | BumpGoModule
    | BumpMavenDependency,
    Field(discriminator="op"),
]
PackageOp = BumpPythonPin | BumpNpmPackage | BumpGoModule | BumpMavenDependency


def subject(op: Operation) -> str:
    """What an operation changes: the package, module or image name."""
    if isinstance(op, BumpBaseImage):
        return op.current.rsplit(":", 1)[0]
    if isinstance(op, BumpWorkloadImage):
        return op.image
    if isinstance(op, SetHelmValue):
        return op.key
    if isinstance(op, BumpGoModule):
        return op.module
    return op.package


def sort_key(op: Operation) -> tuple[str, str, str, int]:
    return (op.path, op.op, subject(op), getattr(op, "stage", 0))
