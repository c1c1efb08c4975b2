"""endoflife.date (httpx; read-only, anonymous): the release lines of a product and their end of life, for the
merge request's ``### Lifecycle`` (``fixloop.core.change.facts``: ``image_products`` names the product and line of
an image, ``lifecycle`` matches it).

Vendor doc: endoflife.date/docs/api (API v0): ``GET /api/<product>.json`` -> a JSON array, newest line first, of
``{"cycle": "3.9", "releaseDate": "2018-12-06", "eol": "2020-11-01" | true | false, "latest": "3.9.6",
"latestReleaseDate", "lts": bool | date, "support": date | bool, "extendedSupport": date | bool, "codename":
"Buster", "link": url | null}`` (fields but ``cycle`` optional; ``eol`` false: no end of life announced); 404 for an
unknown product. ``parse_cycles`` also reads an API v1 product (endoflife.date/docs/api/v1, ``GET
/api/v1/products/<product>`` -> ``{"result": {"name", "releases": [{"name": "12", "codename": "Bookworm",
"releaseDate", "isLts", "isEol", "eolFrom": date | null, "isEoes", "eoesFrom", "latest": {"name": "12.12"}}]}}``):
v0 is deprecated, and the recorded Debian, Alpine and CentOS lines are v1 answers. Recorded answers:
``tests/fixtures/recorded/endoflife/``.

The triage activity (``fixloop.activities.triage``) looks up the product of each scanned OS release and runtime line
(``python``, ``nodejs``, ``ruby``), so that an image on an ended line becomes one migration work item
(``fixloop.core.lifecycle``); the planning activity the line of each image a change leaves running.

Errors: ``NotFound`` (no such product), ``HttpStatusError`` (429/5xx), ``TransportError`` (no answer in
``timeout`` seconds), ``IntegrationError`` (a body over ``MAX_BODY_BYTES`` or not a list of cycles). The planning
and triage activities turn each into a sentence in the MR or the work item ("end of life: not looked up: endoflife.date
unreachable"); none fails the loop.
"""

from __future__ import annotations

import re
from datetime import date

import httpx
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from fixloop.core.change.facts import Cycle
from fixloop.core.parsing import clean
from fixloop.integrations.bounded import JsonApi
from fixloop.integrations.errors import IntegrationError

SYSTEM = "endoflife.date"
MAX_BODY_BYTES = 1 << 20  # the longest product (e.g. Ubuntu, Node.js) is tens of kilobytes
MAX_CYCLES = 500
_PRODUCT = re.compile(r"^[a-z0-9][a-z0-9.+-]{0,63}$")


class EndOfLifeSettings(BaseSettings):
    """``FIXLOOP_ENDOFLIFE_URL`` (default ``https://endoflife.date``), ``FIXLOOP_ENDOFLIFE_ENABLED`` (default on;
    off: the MR and the work items say end of life was not looked up), ``FIXLOOP_ENDOFLIFE_TIMEOUT`` (seconds per
    request, short)."""

    model_config = SettingsConfigDict(env_prefix="FIXLOOP_ENDOFLIFE_", env_file=".env", extra="ignore")

    url: str = Field(default="https://endoflife.date", description="Base URL of the endoflife.date API (v0).")
    enabled: bool = Field(
        default=True,
        description="Look up the end of life of the release line each scanned image (triage) and each bumped image "
        "(merge request) is on.",
    )
    timeout: float = Field(default=3.0, gt=0, le=60, description="Seconds per HTTP request.")


def _day(value: object) -> date | bool | None:
    if isinstance(value, bool | date):
        return value
    if isinstance(value, str) and len(value) <= 10:
        try:
            return date.fromisoformat(value)
        except ValueError:
            return None
    return None


def _text(value: object, limit: int) -> str | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    return clean(value, limit) or None if isinstance(value, str) else None


def _v1_day(entry: dict[str, object], flag: str, day: str) -> date | bool | None:
    """A v1 release's ``<day>`` date (``eolFrom``), else its ``<flag>`` boolean (``isEol``), else None."""
    found = _day(entry.get(day))
    if isinstance(found, date):
        return found
    value = entry.get(flag)
    return value if isinstance(value, bool) else None


def _v1_cycle(entry: dict[str, object]) -> dict[str, object]:
    """A v1 release as the fields of a v0 cycle."""
    latest = entry.get("latest")
    return {
        "cycle": entry.get("name"),
        "eol": _v1_day(entry, "isEol", "eolFrom"),
        "extendedSupport": _v1_day(entry, "isEoes", "eoesFrom"),
        "codename": entry.get("codename"),
        "releaseDate": entry.get("releaseDate"),
        "latest": latest.get("name") if isinstance(latest, dict) else None,
        "lts": entry.get("isLts") is True,
    }


def parse_cycles(body: object) -> list[Cycle]:
    """The release lines of a ``GET /api/<product>.json`` body (or of an API v1 product, ``{"result": {"releases":
    [...]}}``, each release read as a cycle: ``name``, ``eolFrom`` / ``isEol``, ``eoesFrom`` / ``isEoes``,
    ``latest.name``, ``isLts``), in its order (at most ``MAX_CYCLES``): ``cycle`` (a string, or a number as some
    products write it), ``eol`` (a date, or true / false), ``extendedSupport`` (likewise), ``codename``,
    ``releaseDate``, ``latest``, ``lts`` (true or a date: a long-term-support line). An entry without a usable
    ``cycle`` is skipped; ``IntegrationError`` when the body is neither."""
    result = body.get("result") if isinstance(body, dict) else None
    releases = result.get("releases") if isinstance(result, dict) else None
    if isinstance(releases, list):
        body = [_v1_cycle(e) for e in releases[:MAX_CYCLES] if isinstance(e, dict)]
    if not isinstance(body, list):
        raise IntegrationError(SYSTEM, "the answer is not a list of release cycles")
    out: list[Cycle] = []
    for entry in body[:MAX_CYCLES]:
        if not isinstance(entry, dict):
            continue
        release = _day(entry.get("releaseDate"))
        lts = entry.get("lts")
        try:
            out.append(
                Cycle(
                    cycle=_text(entry.get("cycle"), 40) or "",
                    eol=_day(entry.get("eol")),
                    codename=_text(entry.get("codename"), 60),
                    release_date=release if isinstance(release, date) else None,
                    latest=_text(entry.get("latest"), 60),
                    extended=_day(entry.get("extendedSupport")),
                    lts=lts is True or isinstance(_day(lts), date),
                )
            )
        except ValidationError:
            continue
    return out


class EndOfLifeClient(JsonApi):
    """endoflife.date's API at ``settings.url``. Use as a context manager, or call ``close()``."""

    def __init__(self, settings: EndOfLifeSettings, transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(SYSTEM, settings.url, settings.timeout, MAX_BODY_BYTES, transport)
        self.settings = settings

    def cycles(self, product: str) -> list[Cycle]:
        """The release lines of ``product`` (an endoflife.date product id: ``alpine``, ``python``, ``nodejs``),
        parsed by ``parse_cycles``. ``IntegrationError`` for a name that is not a product id; ``NotFound`` for an
        unknown product."""
        if not _PRODUCT.match(product):
            raise IntegrationError(SYSTEM, f"{clean(product, 64)!r} is not a product id")
        return parse_cycles(self.get_json(f"/api/{product}.json"))
