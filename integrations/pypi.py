"""PyPI's JSON API (httpx; read-only, anonymous): what a merge request says of a bumped Python package's target
release (``fixloop.core.change.facts.PackageRelease``): when it was uploaded, whether it is yanked, and its
changelog, source and home page links; and a project's release list (``versions``: the release lines a breaking bump
skips, and the versions within the policy's ``max_jump``, ``fixloop.core.change.plan``).

Vendor doc: docs.pypi.org/api/json/ ("Get a release": ``GET /pypi/<project>/<version>/json`` -> ``{"info": {"name",
"version", "project_urls": {label: url} | null, "home_page", "yanked", "yanked_reason", ...}, "urls": [{"filename",
"upload_time_iso_8601", ...}], "vulnerabilities": [...], "last_serial"}``; 404 for an unknown project or version).
"Get a project" (``GET /pypi/<project>/json``) adds ``"releases": {version: [file, ...]}``, each file with
``"yanked"``: what ``parse_versions`` reads. ``project_urls`` labels are the author's own text; PyPI matches
well-known ones after lower-casing and dropping punctuation and spaces (warehouse ``packaging/metadata``
"well-known project URLs": ``changelog``, ``changes``, ``releasenotes``, ``history``, ``whatsnew``, ``source``,
``sourcecode``, ``repository``, ``homepage``, ...), and so does ``parse_release``. Recorded answers:
``tests/fixtures/recorded/pypi/``.

Errors: ``NotFound`` (no such project or version), ``HttpStatusError`` (429/5xx, retryable), ``TransportError``
(no answer in ``timeout`` seconds), ``IntegrationError`` (a body over ``MAX_BODY_BYTES``, not a release or
no release list). The planning activity turns each into a sentence in the MR ("release notes: not looked up: PyPI
unreachable"); none fails the loop.
"""

from __future__ import annotations

import re
from datetime import datetime
from urllib.parse import quote

import httpx
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from fixloop.core.change.facts import LINKS_MAX, Link, LinkLabel, PackageRelease, safe_url
from fixloop.core.parsing import clean
from fixloop.integrations.bounded import JsonApi
from fixloop.integrations.errors import IntegrationError

SYSTEM = "pypi"
MAX_BODY_BYTES = 8 << 20  # a release's JSON carries its long description (a README): megabytes are possible
VERSIONS_MAX = 5_000  # versions kept of a project's release list
# a version key worth comparing (PEP 440 and legacy), without `_` (Markdown's emphasis; PEP 440 reads it as `.`)
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+!-]{0,59}$")

# Well-known project URL labels (lower-case, letters and digits only) -> fixloop's label, in the order shown.
_LABELS: dict[str, LinkLabel] = {
    **dict.fromkeys(("releasenotes", "releases", "whatsnew", "news"), "release notes"),
    **dict.fromkeys(("changelog", "changes", "changelogs", "history", "changehistory"), "changelog"),
    **dict.fromkeys(("source", "sourcecode", "code", "repository", "github", "gitlab", "git"), "source"),
    **dict.fromkeys(("homepage", "home"), "homepage"),
    **dict.fromkeys(("documentation", "docs"), "documentation"),
}
_ORDER: tuple[LinkLabel, ...] = ("release notes", "changelog", "source", "homepage", "documentation")


class PypiSettings(BaseSettings):
    """``FIXLOOP_PYPI_URL`` (default ``https://pypi.org``; a mirror speaking the JSON API, e.g. a devpi or
    Artifactory PyPI remote), ``FIXLOOP_PYPI_ENABLED`` (default on; off: the MR says release notes were not looked
    up), ``FIXLOOP_PYPI_TIMEOUT`` (seconds per request, short: a slow registry must not hold up planning)."""

    model_config = SettingsConfigDict(env_prefix="FIXLOOP_PYPI_", env_file=".env", extra="ignore")

    url: str = Field(default="https://pypi.org", description="Base URL of PyPI's JSON API (or a mirror of it).")
    enabled: bool = Field(
        default=True,
        description="Look up the bumped Python packages' releases (date, yanked, changelog links) and, for a breaking "
        "bump or one beyond fixloop.yaml's max_jump, their release lists.",
    )
    timeout: float = Field(default=3.0, gt=0, le=60, description="Seconds per HTTP request.")


def _label(key: object) -> LinkLabel | None:
    return _LABELS.get(re.sub(r"[^a-z0-9]", "", str(key).lower()))


def _uploaded(files: object) -> datetime | None:
    """The earliest ``upload_time_iso_8601`` of a release's files (its release time), None without one."""
    times = []
    for f in files if isinstance(files, list) else []:
        value = f.get("upload_time_iso_8601") if isinstance(f, dict) else None
        if isinstance(value, str) and len(value) <= 40:
            try:
                when = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
            if when.tzinfo is not None:
                times.append(when)
    return min(times, default=None)


def parse_release(body: object, package: str, version: str, base_url: str = "https://pypi.org") -> PackageRelease:
    """The ``PackageRelease`` of ``package`` ``version`` (as the change names them) from the body of ``GET
    /pypi/<package>/<version>/json``: released at its first file's upload, yanked and why, and at most
    ``LINKS_MAX`` links: the release notes or changelog, the source, the home page (``info.home_page`` when no
    project URL names one; left out when it is the source link again), and the release's page on ``base_url``.
    Labels are fixloop's (``_LABELS``), never the author's text; a URL that is not a plain http(s) URL
    (``javascript:``, spaces, parentheses, over ``URL_MAX``) is dropped. ``IntegrationError`` when the body is not
    a release."""
    info = body.get("info") if isinstance(body, dict) else None
    if not isinstance(info, dict):
        raise IntegrationError(SYSTEM, f"{clean(package, 100)} {clean(version, 60)}: the answer is not a release")
    found: dict[LinkLabel, str] = {}
    project_urls = info.get("project_urls")
    for key, url in project_urls.items() if isinstance(project_urls, dict) else ():
        label = _label(key)
        if label is not None and label not in found and (safe := safe_url(url)):
            found[label] = safe
    if "homepage" not in found and (home := safe_url(info.get("home_page"))):
        found["homepage"] = home
    if "release notes" in found:
        found.pop("changelog", None)
    if found.get("homepage") is not None and found.get("homepage") == found.get("source"):
        found.pop("homepage")
    links = [Link(label=label, url=found[label]) for label in _ORDER if label in found][: LINKS_MAX - 1]
    page = safe_url(f"{base_url.rstrip('/')}/project/{quote(package, safe='')}/{quote(version, safe='')}/")
    if page:
        links.append(Link(label="PyPI", url=page))
    yanked = info.get("yanked") is True
    reason = info.get("yanked_reason") if yanked and isinstance(info.get("yanked_reason"), str) else None
    return PackageRelease(
        ecosystem="pypi",
        package=package,
        version=version,
        released_at=_uploaded(body.get("urls") if isinstance(body, dict) else None),
        yanked=yanked,
        yanked_reason=reason or None,
        links=links,
    )


def parse_versions(body: object, package: str) -> tuple[str, ...]:
    """The released versions of ``package`` from the body of ``GET /pypi/<package>/json``: the keys of ``releases``
    with at least one file that is not yanked (a release without files, or whose every file is yanked (PEP 592),
    installs nothing by default), in the order listed, at most ``VERSIONS_MAX``, each at most 60 characters of a
    version's alphabet. ``IntegrationError`` when the body has no ``releases`` mapping."""
    releases = body.get("releases") if isinstance(body, dict) else None
    if not isinstance(releases, dict):
        raise IntegrationError(SYSTEM, f"{clean(package, 100)}: the answer lists no releases")
    out: list[str] = []
    for version, files in releases.items():
        if len(out) >= VERSIONS_MAX:
            break
        if isinstance(version, str) and _VERSION.fullmatch(version) and isinstance(files, list):
            if any(isinstance(f, dict) and f.get("yanked") is not True for f in files):
                out.append(version)
    return tuple(out)


class PypiClient(JsonApi):
    """PyPI's JSON API at ``settings.url`` (no credentials; redirects to the canonical project name followed). Use
    as a context manager, or call ``close()``."""

    def __init__(self, settings: PypiSettings, transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(SYSTEM, settings.url, settings.timeout, MAX_BODY_BYTES, transport)
        self.settings = settings

    def release(self, package: str, version: str) -> PackageRelease:
        """The release ``version`` of ``package`` (``GET /pypi/<package>/<version>/json``, parsed by
        ``parse_release``). ``NotFound`` for an unknown project or version; see the module for the other errors."""
        path = f"/pypi/{quote(package, safe='')}/{quote(version, safe='')}/json"
        body = self.get_json(path)
        return parse_release(body, package, version, self.settings.url)

    def versions(self, package: str) -> tuple[str, ...]:
        """The released versions of ``package`` (``GET /pypi/<package>/json``, parsed by ``parse_versions``).
        ``NotFound`` for an unknown project; a body over ``MAX_BODY_BYTES`` (a project with thousands of files) is an
        ``IntegrationError``, like the other errors of the module."""
        body = self.get_json(f"/pypi/{quote(package, safe='')}/json")
        return parse_versions(body, package)
