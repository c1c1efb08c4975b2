"""endoflife.date (httpx; read-only, anonymous): the release lines of a product and their end of life, for the
merge request's ``### Lifecycle`` (``fixloop.core.change.facts``: ``image_products`` names the product and line of
an image, ``lifecycle`` matches it).

Vendor doc: endoflife.date/docs/api (API v0): ``GET /api/<product>.json`` -> a JSON array, newest line first, of
``{"cycle": "3.9", "releaseDate": "2018-12-06", "eol": "2020-11-01" | true | false, "latest": "3.9.6",
"latestReleaseDate", "lts": bool | date, "support": date | bool, "codename": "Buster", "link": url | null}``
(fields but ``cycle`` optional; ``eol`` false: no end of life announced); 404 for an unknown product. Recorded
answers: ``tests/fixtures/recorded/endoflife/``.

Errors: ``NotFound`` (no such product), ``HttpStatusError`` (429/5xx), ``TransportError`` (no answer in
``timeout`` seconds), ``IntegrationError`` (a body over ``MAX_BODY_BYTES`` or not a list of cycles). The planning
activity turns each into a sentence in the MR ("end of life: not looked up: endoflife.date unreachable"); none
fails the loop.
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
    off: the MR says end of life was not looked up), ``FIXLOOP_ENDOFLIFE_TIMEOUT`` (seconds per request, short)."""

    model_config = SettingsConfigDict(env_prefix="FIXLOOP_ENDOFLIFE_", env_file=".env", extra="ignore")

    url: str = Field(default="https://endoflife.date", description="Base URL of the endoflife.date API (v0).")
    enabled: bool = Field(
        default=True, description="Look up the end of life of the release line each bumped image is on."
    )
    timeout: float = Field(default=3.0, gt=0, le=60, description="Seconds per HTTP request.")


def _day(value: object) -> date | bool | None:
    if isinstance(value, bool):
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


def parse_cycles(body: object) -> list[Cycle]:
    """The release lines of a ``GET /api/<product>.json`` body, in its order (at most ``MAX_CYCLES``): ``cycle``
    (a string, or a number as some products write it), ``eol`` (a date, or true / false), ``codename``,
    ``releaseDate``, ``latest``. An entry without a usable ``cycle`` is skipped; ``IntegrationError`` when the body
    is not a list."""
    if not isinstance(body, list):
        raise IntegrationError(SYSTEM, "the answer is not a list of release cycles")
    out: list[Cycle] = []
    for entry in body[:MAX_CYCLES]:
        if not isinstance(entry, dict):
            continue
        release = _day(entry.get("releaseDate"))
        try:
            out.append(
                Cycle(
                    cycle=_text(entry.get("cycle"), 40) or "",
                    eol=_day(entry.get("eol")),
                    codename=_text(entry.get("codename"), 60),
                    release_date=release if isinstance(release, date) else None,
                    latest=_text(entry.get("latest"), 60),
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
