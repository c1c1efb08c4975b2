"""The package-registry and end-of-life clients offline: PyPI's JSON API and endoflife.date's API v0 on their
recorded answers (``tests/fixtures/recorded/pypi``, ``.../endoflife``) served by an ``httpx.MockTransport``, hostile
project URLs, every way an answer can be missing, and the parsers' input boundary under hypothesis."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import httpx
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fixloop.core.change.facts import LINKS_MAX, URL_MAX, Cycle, image_products, lifecycle, match_cycle, safe_url
from fixloop.integrations.endoflife import EndOfLifeClient, EndOfLifeSettings, parse_cycles
from fixloop.integrations.errors import HttpStatusError, IntegrationError, NotFound, TransportError
from fixloop.integrations.pypi import (
    MAX_BODY_BYTES,
    VERSIONS_MAX,
    PypiClient,
    PypiSettings,
    parse_release,
    parse_versions,
)

RECORDED = Path(__file__).parents[1] / "fixtures" / "recorded"
BLACK = RECORDED / "pypi" / "poetry-fixtures_pypi_black_21.11b0.json"
IPYTHON = RECORDED / "pypi" / "poetry-fixtures_pypi_ipython_7.5.0.json"
CELERY = RECORDED / "pypi" / "dependabot-fixtures_pypi_celery.json"  # GET /pypi/celery/json: a release list
LUIGI = RECORDED / "pypi" / "dependabot-fixtures_pypi_luigi.json"
PYTHON = RECORDED / "endoflife" / "norwegianblue_api_python.json"
UBUNTU = RECORDED / "endoflife" / "norwegianblue_api_ubuntu.json"


def serve(routes: dict[str, httpx.Response], seen: list[str] | None = None) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request.url.path)
        return routes.get(request.url.path, httpx.Response(404, json={"message": "Not Found"}))

    return httpx.MockTransport(handler)


def recorded(path: Path) -> httpx.Response:
    return httpx.Response(200, content=path.read_bytes(), headers={"Content-Type": "application/json"})


# ---------------------------------------------------------------- PyPI


def test_a_recorded_yanked_release_with_its_changelog() -> None:
    release = parse_release(json.loads(BLACK.read_bytes()), "black", "21.11b0")
    assert release.released_at == datetime(2021, 11, 17, 2, 32, 14, 551680, tzinfo=UTC)  # the first file's upload
    assert release.yanked and release.yanked_reason == "Broken regex dependency. Use 21.11b1 instead."
    assert [(link.label, link.url) for link in release.links] == [
        ("changelog", "https://github.com/psf/black/blob/main/CHANGES.md"),
        ("homepage", "https://github.com/psf/black"),
        ("PyPI", "https://pypi.org/project/black/21.11b0/"),
    ]
    assert release.missing is None


def test_a_recorded_release_with_source_docs_and_no_changelog() -> None:
    release = parse_release(json.loads(IPYTHON.read_bytes()), "ipython", "7.5.0", "https://pypi.example.org/")
    assert release.released_at == datetime(2019, 4, 25, 15, 38, 21, 726776, tzinfo=UTC)
    assert not release.yanked and release.yanked_reason is None
    assert [(link.label, link.url) for link in release.links] == [  # Funding and Tracker are not release links
        ("source", "https://github.com/ipython/ipython"),
        ("homepage", "https://ipython.org"),
        ("documentation", "https://ipython.readthedocs.io/"),
        ("PyPI", "https://pypi.example.org/project/ipython/7.5.0/"),
    ]


def test_the_client_reads_a_release_through_the_json_api() -> None:
    seen: list[str] = []
    transport = serve({"/pypi/black/21.11b0/json": recorded(BLACK)}, seen)
    with PypiClient(PypiSettings(_env_file=None), transport=transport) as client:  # type: ignore[call-arg]
        release = client.release("black", "21.11b0")
        assert release == parse_release(json.loads(BLACK.read_bytes()), "black", "21.11b0")
        with pytest.raises(NotFound):
            client.release("black", "99.0")
    assert seen == ["/pypi/black/21.11b0/json", "/pypi/black/99.0/json"]


@pytest.mark.parametrize(
    ("answer", "error", "retryable"),
    [
        (httpx.Response(503, text="Service Unavailable"), HttpStatusError, True),
        (httpx.Response(429), HttpStatusError, True),
        (httpx.Response(200, text="<html>maintenance</html>"), IntegrationError, False),
        (httpx.Response(200, json=["not", "a", "release"]), IntegrationError, False),
        (httpx.Response(200, content=b"[" + b"0," * (MAX_BODY_BYTES // 2) + b"0]"), IntegrationError, False),
    ],
)
def test_an_unusable_answer_is_an_integration_error(
    answer: httpx.Response, error: type[IntegrationError], retryable: bool
) -> None:
    transport = httpx.MockTransport(lambda request: answer)
    with PypiClient(PypiSettings(_env_file=None), transport=transport) as client:  # type: ignore[call-arg]
        with pytest.raises(error) as raised:
            client.release("Werkzeug", "0.15.3")
    assert raised.value.retryable is retryable and "Werkzeug" in raised.value.message


def test_no_answer_is_a_transport_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("timed out", request=request)

    with PypiClient(PypiSettings(_env_file=None), transport=httpx.MockTransport(refuse)) as client:  # type: ignore[call-arg]
        with pytest.raises(TransportError) as raised:
            client.release("Werkzeug", "0.15.3")
    assert raised.value.retryable and raised.value.message == "GET /pypi/Werkzeug/0.15.3/json: ConnectTimeout"


HOSTILE_URLS = {
    "Changelog": "javascript:alert(document.cookie)",
    "Release notes": "https://evil.example/notes)[x](javascript:alert(1)",
    "Source": "data:text/html;base64,PHNjcmlwdD4=",
    "Homepage": "https://user:pw@evil.example/",
    "Documentation": "https://docs.example/ <img src=x onerror=alert(1)>",
    "What's new": "//evil.example/protocol-relative",
    "History": "https://ok.example/" + "a" * URL_MAX,
    "Repository": 'https://ok.example/"onmouseover="x',
    "Download": "https://ok.example/not-a-release-link",
}


def test_hostile_project_urls_are_dropped_and_labels_are_fixlooos_own() -> None:
    body = {
        "info": {"project_urls": HOSTILE_URLS, "home_page": "vbscript:msgbox", "yanked": "yes"},
        "urls": [{"upload_time_iso_8601": "not a time"}, {"upload_time_iso_8601": "2019-05-14T17:13:59"}],
    }
    release = parse_release(body, "Werkzeug", "0.15.3")
    assert [link.label for link in release.links] == ["PyPI"]  # every author URL refused
    assert release.released_at is None  # neither time is a UTC upload time
    assert not release.yanked  # only a JSON true is a yank
    kept = parse_release({"info": {"project_urls": {"CHANGES": "https://ok.example/c?x=1&y=2#v0.15"}}}, "x", "1")
    assert [(link.label, link.url) for link in kept.links][0] == ("changelog", "https://ok.example/c?x=1&y=2#v0.15")


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
URLISH = st.one_of(
    st.text(max_size=60),
    st.builds(lambda a, b: a + b, st.sampled_from(["https://", "http://", "javascript:", "//", "HTTPS://"]), st.text()),
)
INFO = st.fixed_dictionaries(
    {},
    optional={
        "project_urls": st.one_of(JSON, st.dictionaries(st.text(max_size=20), URLISH, max_size=8)),
        "home_page": st.one_of(JSON, URLISH),
        "yanked": JSON,
        "yanked_reason": JSON,
    },
)


@settings(max_examples=300)
@given(st.one_of(JSON, st.fixed_dictionaries({"info": INFO}, optional={"urls": JSON})))
def test_any_answer_gives_a_bounded_release_or_an_integration_error(body: object) -> None:
    try:
        release = parse_release(body, "Werkzeug", "0.15.3")
    except IntegrationError:
        assert not (isinstance(body, dict) and isinstance(body.get("info"), dict))
        return
    assert len(release.links) <= LINKS_MAX and release.links[-1].label == "PyPI"
    assert all(
        safe_url(link.url) == link.url and link.url.startswith(("https://", "http://")) for link in release.links
    )
    assert all(not set(link.url) & set(" ()<>[]|`\"'\\") for link in release.links)
    assert release.yanked_reason is None or len(release.yanked_reason) <= 200


def test_recorded_release_lists_leave_out_releases_without_installable_files() -> None:
    luigi = parse_versions(json.loads(LUIGI.read_bytes()), "luigi")
    assert len(luigi) == 82 and "1.0.8" not in luigi and "1.0.21" not in luigi  # listed without files
    assert {"1.0", "2.8.13", "3.0.0b1", "3.6.0"} <= set(luigi)  # pre-releases kept: the planner leaves them out
    celery = parse_versions(json.loads(CELERY.read_bytes()), "celery")  # a 2019 answer: no "yanked" field
    assert len(celery) == 150 and "3.1.26-1" in celery and "4.4.0rc5" in celery
    body = {"releases": {"1.0": [{"yanked": True}], "1.1": [{"yanked": True}, {"yanked": False}], "2.0": []}}
    assert parse_versions(body, "p") == ("1.1",)  # every file yanked, or none: nothing installs
    with pytest.raises(IntegrationError, match="p: the answer lists no releases"):
        parse_versions({"info": {}}, "p")  # a release's answer (``/pypi/<p>/<v>/json``) lists none


def test_the_client_reads_a_release_list_through_the_json_api() -> None:
    seen: list[str] = []
    transport = serve({"/pypi/celery/json": recorded(CELERY)}, seen)
    with PypiClient(PypiSettings(_env_file=None), transport=transport) as client:  # type: ignore[call-arg]
        assert client.versions("celery") == parse_versions(json.loads(CELERY.read_bytes()), "celery")
        with pytest.raises(NotFound):
            client.versions("no-such-project")
    assert seen == ["/pypi/celery/json", "/pypi/no-such-project/json"]


@settings(max_examples=200)
@given(st.one_of(JSON, st.fixed_dictionaries({"releases": st.dictionaries(st.text(max_size=70), JSON)})))
@example({"releases": {"0_": [{}]}})  # a hypothesis find: an underscore kept (Markdown emphasis in an MR)
def test_any_answer_gives_a_bounded_release_list_or_an_integration_error(body: object) -> None:
    try:
        versions = parse_versions(body, "p")
    except IntegrationError:
        assert not (isinstance(body, dict) and isinstance(body.get("releases"), dict))
        return
    assert len(versions) <= VERSIONS_MAX and all(isinstance(v, str) and 0 < len(v) <= 60 for v in versions)
    assert all(not set(v) & set(" `<>[]()|*_\\") for v in versions)


def test_settings_are_short_and_public_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("FIXLOOP_PYPI_URL", "FIXLOOP_PYPI_ENABLED", "FIXLOOP_PYPI_TIMEOUT"):
        monkeypatch.delenv(key, raising=False)
    assert PypiSettings(_env_file=None) == PypiSettings(url="https://pypi.org", enabled=True, timeout=3.0)  # type: ignore[call-arg]
    monkeypatch.setenv("FIXLOOP_PYPI_ENABLED", "false")
    monkeypatch.setenv("FIXLOOP_ENDOFLIFE_URL", "https://eol.mirror.example")
    assert not PypiSettings(_env_file=None).enabled  # type: ignore[call-arg]
    assert EndOfLifeSettings(_env_file=None).url == "https://eol.mirror.example"  # type: ignore[call-arg]


# ---------------------------------------------------------------- endoflife.date


def test_recorded_cycles_of_python_and_ubuntu() -> None:
    python = parse_cycles(json.loads(PYTHON.read_bytes()))
    assert [c.cycle for c in python] == ["3.10", "3.9", "3.8", "3.7", "3.6", "3.5", "3.4", "3.3", "2.7"]
    assert python[4] == Cycle(cycle="3.6", eol=date(2021, 12, 23), release_date=date(2016, 12, 22), latest="3.6.15")
    ubuntu = parse_cycles(json.loads(UBUNTU.read_bytes()))
    jammy = match_cycle("jammy", ubuntu)
    assert jammy is not None and (jammy.cycle, jammy.eol, jammy.codename) == (
        "22.04",
        date(2032, 4, 1),
        "Jammy Jellyfish",
    )
    assert match_cycle("18.04", ubuntu) == next(c for c in ubuntu if c.cycle == "18.04")


def test_an_image_on_an_ended_line_of_the_recorded_answers() -> None:
    """``python:3.6.15-slim-bionic``: Python 3.6 ended 2021-12-23; its tag names Ubuntu Bionic, 18.04."""
    cycles = {
        "python": parse_cycles(json.loads(PYTHON.read_bytes())),
        "ubuntu": parse_cycles(json.loads(UBUNTU.read_bytes())),
    }
    image = "python:3.6.15-slim-bionic"
    lines = [lifecycle(image, product, label, hint, cycles[product]) for product, label, hint in image_products(image)]
    assert [(life.label, life.cycle, life.eol, life.newest) for life in lines] == [
        ("Python", "3.6", date(2021, 12, 23), "3.10"),
        ("Ubuntu", "18.04", date(2028, 4, 1), "22.04"),
    ]
    unknown = lifecycle("python:3.99-slim", "python", "Python", "3.99", cycles["python"])
    assert unknown.cycle is None and unknown.missing == "endoflife.date lists no Python release line for 3.99"


NODEJS = RECORDED / "endoflife" / "endoflife-rs_api_nodejs.json"
UBUNTU_2025 = RECORDED / "endoflife" / "endoflife-rs_api_ubuntu.json"
DEBIAN_V1 = RECORDED / "endoflife" / "endoflife-radar_api_v1_debian.json"


def test_recorded_extended_support_and_lts_of_nodejs_and_ubuntu() -> None:
    """The 2025 answers give the end of standard support as ``eol`` and Ubuntu Pro / commercial support as
    ``extendedSupport``; Node.js marks an LTS line by the date it became one."""
    node = {c.cycle: c for c in parse_cycles(json.loads(NODEJS.read_bytes()))}
    assert (node["12"].eol, node["12"].lts, node["12"].extended) == (date(2022, 4, 30), True, True)
    assert (node["13"].lts, node["3"].eol) == (False, True)
    bionic = match_cycle("18.04", parse_cycles(json.loads(UBUNTU_2025.read_bytes())))
    assert bionic is not None
    assert (bionic.eol, bionic.extended, bionic.lts) == (date(2023, 5, 31), date(2028, 4, 1), True)


def test_a_recorded_api_v1_product_reads_as_cycles() -> None:
    """Debian from a recorded API v1 answer (its product object under ``result``): ``eolFrom`` is the end of
    Debian's security support, ``eoesFrom`` Debian LTS, ``latest.name`` the newest point release."""
    debian = parse_cycles({"result": json.loads(DEBIAN_V1.read_bytes())})
    assert [c.cycle for c in debian[:4]] == ["13", "12", "11", "10"]
    assert debian[3] == Cycle(
        cycle="10",
        eol=date(2022, 9, 10),
        codename="Buster",
        release_date=date(2019, 7, 6),
        latest="10.13",
        extended=date(2024, 6, 30),
    )
    assert match_cycle("buster", debian) == debian[3] and match_cycle("10.8", debian) == debian[3]


def test_the_client_reads_a_product_through_the_api() -> None:
    seen: list[str] = []
    with EndOfLifeClient(
        EndOfLifeSettings(_env_file=None), transport=serve({"/api/python.json": recorded(PYTHON)}, seen)
    ) as client:  # type: ignore[call-arg]
        assert client.cycles("python") == parse_cycles(json.loads(PYTHON.read_bytes()))
        with pytest.raises(NotFound):
            client.cycles("alpine")
        with pytest.raises(IntegrationError):
            client.cycles("../admin")  # never a path of the caller's making
    assert seen == ["/api/python.json", "/api/alpine.json"]


CYCLE_ENTRY = st.fixed_dictionaries(
    {},
    optional={
        "cycle": st.one_of(JSON, st.from_regex(r"\A[0-9]{1,2}(\.[0-9]{1,2})?\Z")),
        "eol": st.one_of(JSON, st.dates().map(date.isoformat)),
        "releaseDate": st.one_of(JSON, st.dates().map(date.isoformat)),
        "codename": JSON,
        "latest": JSON,
    },
)


RELEASE_ENTRY = st.fixed_dictionaries(
    {},
    optional={
        "name": st.one_of(JSON, st.from_regex(r"\A[0-9]{1,2}(\.[0-9]{1,2})?\Z")),
        "isEol": JSON,
        "eolFrom": st.one_of(JSON, st.dates().map(date.isoformat)),
        "isEoes": JSON,
        "eoesFrom": st.one_of(JSON, st.dates().map(date.isoformat)),
        "releaseDate": st.one_of(JSON, st.dates().map(date.isoformat)),
        "isLts": JSON,
        "latest": st.one_of(JSON, st.fixed_dictionaries({"name": JSON})),
    },
)
V1_ANSWER = st.fixed_dictionaries({"result": st.fixed_dictionaries({"releases": st.lists(RELEASE_ENTRY, max_size=8)})})


def _entries(body: object) -> int | None:
    """How many cycles ``body`` can give at most (None: it is no answer ``parse_cycles`` reads)."""
    if isinstance(body, list):
        return len(body)
    result = body.get("result") if isinstance(body, dict) else None
    releases = result.get("releases") if isinstance(result, dict) else None
    return len(releases) if isinstance(releases, list) else None


@settings(max_examples=300)
@given(st.one_of(JSON, V1_ANSWER, st.lists(st.one_of(CYCLE_ENTRY, JSON), max_size=12)))
def test_any_answer_gives_valid_cycles_or_an_integration_error(body: object) -> None:
    try:
        cycles = parse_cycles(body)
    except IntegrationError:
        assert _entries(body) is None
        return
    most = _entries(body)
    assert most is not None and len(cycles) <= most
    for c in cycles:
        assert c.eol is None or isinstance(c.eol, bool | date)
        assert match_cycle(c.cycle, cycles) is not None  # every kept line is found by its own name
