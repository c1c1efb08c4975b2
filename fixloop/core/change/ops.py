"""Typed change operations: the only thing that may turn into a write.

Each operation names one file (``path``, plus ``lockfile`` for npm), the value the file must hold now
(``current``) and the value to write (``new``). Operations come from the planner (or are picked by a model from
the planner's valid ones); ``fixloop.core.change.edit`` applies them and ``fixloop.core.change.policy`` validates the
result.
Values are constrained to the grammar of what they stand for (a version, a tag, a package name), so no value can
carry a newline, a shell metacharacter or markup into a file.
"""

from __future__ import annotations

from datetime import datetime
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


# ---------------------------------------------------------------- incident remediations
#
# The operations an incident's merge request may carry (fixloop.core.change.remedy validates them against the
# incident policy, fixloop.core.change.edit applies the file edits). Kept apart from ``Operation``: a vulnerability
# plan (and the model drafting its MR) can never carry one.

# A Kubernetes object name (DNS-1123 subdomain, kubernetes.io/docs/concepts/overview/working-with-objects/names/)
# and a container name (DNS-1123 label).
K8sName = Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")]
ContainerName = Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]
# A Kubernetes quantity as written in a manifest (kubernetes.io/docs/reference/kubernetes-api/common-definitions/
# quantity/): an unsigned decimal, then a binary-SI suffix (Ki..Ei), a decimal-SI one (m, k, M..E) or an exponent.
Quantity = Annotated[
    str, Field(min_length=1, max_length=32, pattern=r"^[0-9]+(\.[0-9]+)?([KMGTPE]i|[mkMGTPE]|[eE][+-]?[0-9]{1,2})?$")
]
# A full git object id (SHA-1 or SHA-256), lower-case hex.
CommitSha = Annotated[str, Field(pattern=r"^[0-9a-f]{40}([0-9a-f]{24})?$")]
# A dotted key into a Helm values document (``resources``, ``spec.values.replicaCount``).
DottedKey = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")]
Replicas = Annotated[int, Field(ge=0, le=10_000)]


class _Target(_Op):
    """Where a workload's value lives in ``path``: with ``values_key`` unset, the ``Deployment`` / ``StatefulSet``
    (``apps/*``) named ``workload`` in the file, a full manifest or a Kustomize strategic-merge patch of one (the
    patch names its target by kind and ``metadata.name``, kubectl.docs.kubernetes.io ``patchesStrategicMerge``);
    with ``values_key`` set, a Helm values file (or the ``document``-th document, a Flux ``HelmRelease`` with
    ``spec.values...``) and the dotted key there."""

    workload: K8sName
    values_key: DottedKey | None = None
    document: Annotated[int, Field(ge=0, le=64)] = 0

    def _where(self) -> str:
        if self.values_key is None:
            return f"{self.path}: {self.workload}"
        doc = f" (document {self.document})" if self.document else ""
        return f"{self.path}: {self.workload} ({self.values_key}{doc})"


class RevertCommit(BaseModel):
    """Revert the culprit commit ``sha`` of the GitOps repository's default branch (GitLab's revert API does it,
    ``POST /projects/:id/repository/commits/:sha/revert``, docs.gitlab.com/api/commits/#revert-a-commit).

    ``parents``: the commit's parents as git lists them; ``mainline``: for a merge commit, which parent (1-based, as
    ``git revert -m``) is the branch line the revert goes back to; ``files``: every path the commit touched (its
    diff, old and new paths); ``applied_at``: when the commit took effect (Flux applied it; else its commit time),
    checked against the onset and the policy's lookback."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    op: Literal["revert_commit"] = "revert_commit"
    sha: CommitSha
    parents: tuple[CommitSha, ...] = Field(max_length=8)
    mainline: Annotated[int, Field(ge=1, le=8)] | None = None
    files: tuple[RepoPath, ...] = Field(min_length=1, max_length=100)
    applied_at: datetime

    @property
    def path(self) -> str:
        """The first file (the operations' sort key)."""
        return self.files[0]

    def paths(self) -> list[str]:
        return list(self.files)

    def describe(self) -> str:
        return f"revert {self.sha[:12]} ({len(self.files)} file{'s' if len(self.files) != 1 else ''})"


class RollbackImage(_Target):
    """The image tag of ``container`` of ``workload`` from ``from_tag`` (what the file holds now) back to
    ``to_tag`` (the tag it ran before the culprit). In a manifest or patch: the container's ``image:``; in a
    Kustomization (``path`` a ``kustomization.yaml``): the ``images:`` entry named ``image`` (its ``newTag``); in Helm
    values: the scalar at ``values_key`` (``image.tag``). ``image`` (the repository) is required for a
    Kustomization and checked against a manifest's ``image:`` when given."""

    op: Literal["rollback_image"] = "rollback_image"
    container: ContainerName
    image: ImageName | None = None
    from_tag: Version
    to_tag: Version

    def describe(self) -> str:
        return f"{self._where()}/{self.container} image {self.from_tag} -> {self.to_tag}"


class SetMemory(_Target):
    """The memory of ``container`` of ``workload``: ``resources.limits.memory`` ``current_limit`` -> ``limit`` and,
    when the file sets one, ``resources.requests.memory`` ``current_request`` -> ``request`` (both None when it
    sets none). Values are Kubernetes quantities as written (``512Mi``); in Helm values ``values_key`` is the
    dotted key of the ``resources`` mapping."""

    op: Literal["set_memory"] = "set_memory"
    container: ContainerName
    current_limit: Quantity
    limit: Quantity
    current_request: Quantity | None = None
    request: Quantity | None = None

    def describe(self) -> str:
        req = f", request {self.current_request} -> {self.request}" if self.request is not None else ""
        return f"{self._where()}/{self.container} memory limit {self.current_limit} -> {self.limit}{req}"


class SetReplicas(_Target):
    """``spec.replicas`` of ``workload`` ``current`` -> ``replicas`` (Helm values: the integer at ``values_key``,
    e.g. ``replicaCount``)."""

    op: Literal["set_replicas"] = "set_replicas"
    current: Replicas
    replicas: Replicas

    def describe(self) -> str:
        return f"{self._where()} replicas {self.current} -> {self.replicas}"


class SetMaxReplicas(_Target):
    """``spec.maxReplicas`` of the ``HorizontalPodAutoscaler`` whose ``scaleTargetRef`` names ``workload``
    (autoscaling/v1, v2; Helm values: the integer at ``values_key``, e.g. ``hpa.maxReplicas``) ``current`` ->
    ``max_replicas``."""

    op: Literal["set_max_replicas"] = "set_max_replicas"
    current: Replicas
    max_replicas: Replicas

    def describe(self) -> str:
        return f"{self._where()} HPA maxReplicas {self.current} -> {self.max_replicas}"


IncidentOperation = Annotated[
    RevertCommit | RollbackImage | SetMemory | SetReplicas | SetMaxReplicas,
    Field(discriminator="op"),
]
FileRemedy = RollbackImage | SetMemory | SetReplicas | SetMaxReplicas
# The fixloop.yaml ``incidents.actions`` name of each operation.
ACTION_OF: dict[str, str] = {
    "revert_commit": "revert",
    "rollback_image": "rollback_image",
    "set_memory": "memory",
    "set_replicas": "replicas",
    "set_max_replicas": "replicas",
}


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
