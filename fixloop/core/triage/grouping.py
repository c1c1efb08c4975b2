"""How findings with a fix in language packages become ``dependency_bump`` work items: the repository's
``fixloop.yaml`` ``grouping:`` (``fixloop.core.models.Grouping``), shared by both triage engines and their checks.

* ``per-manifest`` (the default): one item per scanned manifest or lockfile (artifact + target), each package raised
  to the lowest version fixing its advisories there;
* ``per-package``: one item per package (ecosystem + name; a PyPI name normalised as PEP 503 does, so pip-audit's
  ``django`` and Trivy's ``Django`` are one package) across every scanned artifact and manifest that reports it,
  raised to one version everywhere (``one_version``: the highest of the per-manifest lowest fixes); its planner
  also finds the manifests the scans did not cover (``fixloop.core.change.locate``), Renovate's default;
* ``per-service``: one item per service (the one ``fixloop.core.service.ServiceNames`` names for the scanned artifact
  or manifest) holding every bump of its manifests; a finding of no known service stays per manifest.

Whatever the grouping, OS rebuilds stay one per image and risk digests one per artifact (or manifest): a grouping
only decides which bumps share a merge request. The rule every engine's answer obeys (``unrelated``): no merge
request mixes unrelated fixes, i.e. all its findings have the same ``bump_key``.

Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from fixloop.core.models import DEFAULT_GROUPING, GROUPINGS, Grouping, PackageBump, Signal, grouping_of
from fixloop.core.parsing import clean, highest_version, package_name
from fixloop.core.service import ServiceNames

__all__ = ["DEFAULT_GROUPING", "GROUPINGS", "bump_key", "grouping_of", "one_version", "package_name", "unrelated"]

BumpKey = tuple[str | None, ...]


def bump_key(s: Signal, grouping: Grouping, names: ServiceNames | None = None) -> BumpKey:
    """Which ``dependency_bump`` the fixable language finding ``s`` belongs to under ``grouping``:
    ``("package", ecosystem, name)`` (``per-package``), ``("service", service)`` (``per-service``, when ``names``
    knows the service of its artifact or manifest), else ``("manifest", artifact, target)``."""
    if grouping == "per-package":
        return ("package", s.ecosystem, package_name(s.ecosystem, s.package))
    if grouping == "per-service" and names is not None:
        service = names.of_artifact(s.artifact, s.target)
        if service:
            return ("service", service)
    return ("manifest", s.artifact, s.target)


_NOUNS = {"package": "packages", "service": "services", "manifest": "manifests"}


def _label(key: BumpKey) -> str:
    return " ".join(clean(p, 80) for p in key[1:] if p) or "(none)"


def unrelated(members: Iterable[Signal], grouping: Grouping, names: ServiceNames | None = None) -> str | None:
    """Why ``members`` (fixable language findings) cannot share one merge request under ``grouping`` (``mixes
    packages npm lodash, npm jquery``), or None when they all have the same ``bump_key``: under ``per-package`` the
    same package across artifacts and manifests is one fix, two packages are not; under ``per-service`` one
    service's manifests are one fix; under ``per-manifest`` one manifest is."""
    keys = sorted({bump_key(s, grouping, names) for s in members}, key=lambda k: tuple(str(p) for p in k))
    if len(keys) < 2:
        return None
    kinds = {k[0] for k in keys}
    noun = _NOUNS[str(keys[0][0])] if len(kinds) == 1 else "unrelated fixes"
    more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
    return f"mixes {noun} {', '.join(_label(k) for k in keys[:3])}{more}"


def one_version(bumps: Sequence[PackageBump]) -> list[PackageBump]:
    """``bumps`` (one per package and installed version) with every installed version of a package raised to the
    same version: the highest of their fixed versions (each the lowest fixing its advisories there), by the
    ecosystem's rules. Order kept."""
    fixed: dict[tuple[str | None, str], list[str]] = {}
    for b in bumps:
        fixed.setdefault((b.ecosystem, package_name(b.ecosystem, b.package)), []).append(b.fixed_version)
    out = []
    for b in bumps:
        versions = [v for v in fixed[(b.ecosystem, package_name(b.ecosystem, b.package))] if v != "?"]
        best = highest_version(b.ecosystem, versions) or b.fixed_version
        out.append(b if best == b.fixed_version else b.model_copy(update={"fixed_version": best}))
    return out
