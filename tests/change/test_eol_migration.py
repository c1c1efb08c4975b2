"""Planning an end-of-life migration (issue 22, scope 4): the base image bump across release lines to the target
line (``newest_on_line`` on the registry's tags), flagged as a major migration with the line's end of life, its
endoflife.date page and its blast radius; without a tag on the target line, or a target that is another image, no
merge request and a reason naming the target (the Jira comment). Real reports, the seeded repository, the
recorded endoflife.date answers of tests/test_lifecycle.py on its pinned day."""

from __future__ import annotations

from collections.abc import Sequence

from fixloop.core.change import NotLocated, Plan, plan
from fixloop.core.change.mr import render
from fixloop.core.models import Signal, WorkItem, WorkItemKind
from fixloop.core.naming import named
from fixloop.core.triage import triage_rules
from tests.change.helpers import SEED, TAGS
from tests.conftest import signals
from tests.test_eol_runtimes import VULNERABLE_IMAGE, lifecycles, renamed
from tests.test_lifecycle import recorded

DEBIAN_10 = "grype/dd-grype-0.7_defectdojo-django-1.13.1.json"  # Grype's "debian 10": the seed's FROM debian:10.2
ALPINE_39 = "trivy/trivy-0.22-fulldb_alpine-39.json"  # alpine 3.9.4: the seed's catalog FROM alpine:3.9.4
# Docker Hub's tags of the target lines (a subset), beside the helpers' tags of the old ones.
NEW_LINES = {
    "debian": ["12", "12.12", "13", "13.1", "13.1-slim", "trixie", "trixie-slim"],
    "alpine": ["3.21", "3.21.5", "3.22", "3.22.0", "3.22.2"],
}


def tags(repository: str) -> Sequence[str]:
    return [*TAGS.get(repository, []), *NEW_LINES.get(repository, [])]


def migration(report: str) -> tuple[WorkItem, list[Signal]]:
    found = signals(report)
    items = triage_rules(found, lifecycles=recorded()).work_items
    (item,) = [w for w in items if w.kind is WorkItemKind.EOL_MIGRATION]
    return item, found


def test_debian_10_moves_to_the_newest_tag_of_debian_13_as_a_major_migration() -> None:
    item, found = migration(DEBIAN_10)
    result = plan(item, found, SEED, tags=tags)
    assert isinstance(result, Plan)
    moved = SEED["services/legacy-api/Dockerfile"].replace("FROM debian:10.2\n", "FROM debian:13.1\n")
    assert result.edits == {"services/legacy-api/Dockerfile": moved}
    assert "-FROM debian:10.2\n+FROM debian:13.1\n" in result.diff
    major, blast = result.risks[:2]
    assert major.startswith("Major migration to Debian 13 (Trixie), not a patch")
    assert "reached its end of life on 2022-09-10" in major and "https://endoflife.date/debian" in major
    assert blast == (
        "Blast radius: 1 FROM line(s) in 1 Dockerfile(s) on Debian 10 in this repository: "
        "services/legacy-api/Dockerfile (legacy-api); this merge request moves services/legacy-api/Dockerfile."
    )
    text = render(item, result, found)
    assert text.title.startswith("Migrate debian base image 10.2 \u2192 13.1 (fixes 151 CVEs")
    assert "fixloop::eol_migration" in text.labels
    assert "`2.28-10` \u2192 `Debian 13 (Trixie)`" in text.description  # unfixed on 10, closed by the new line
    assert "- Major migration to Debian 13 (Trixie)" in text.description  # the risk notes
    renamed = named(item, "legacy-api")
    assert renamed.title.startswith("Migrate Debian 10 (end of life 2022-09-10) in legacy-api to Debian 13 (Trixie)")


def test_alpine_3_9_keeps_its_three_number_tags_on_the_target_line() -> None:
    item, found = migration(ALPINE_39)
    result = plan(item, found, SEED, tags=tags)
    assert isinstance(result, Plan)
    assert "-FROM alpine:3.9.4\n+FROM alpine:3.22.2\n" in result.diff


def test_the_blast_radius_names_every_dockerfile_and_service_on_the_line() -> None:
    item, found = migration(DEBIAN_10)
    repo = {
        "services/defectdojo-django/Dockerfile": "FROM debian:10.9\nRUN true\n",
        "services/worker/Dockerfile": "FROM debian:10 AS base\nFROM base\n",
        "services/api/Dockerfile": "FROM debian:11.5\n",  # another line: not in the radius
    }
    result = plan(item, found, repo, tags=tags)
    assert isinstance(result, Plan) and list(result.edits) == ["services/defectdojo-django/Dockerfile"]
    assert result.risks[1] == (
        "Blast radius: 2 FROM line(s) in 2 Dockerfile(s) on Debian 10 in this repository: "
        "services/defectdojo-django/Dockerfile (defectdojo-django), services/worker/Dockerfile (worker); this merge "
        "request moves services/defectdojo-django/Dockerfile; the other 1 need the same migration."
    )


def test_without_a_tag_on_the_target_line_it_is_a_jira_item_naming_the_target() -> None:
    item, found = migration(DEBIAN_10)
    result = plan(item, found, SEED, tags=lambda repository: TAGS.get(repository, []))
    assert isinstance(result, NotLocated)
    assert result.reason.startswith("debian: the registry lists no debian tag on Debian 13 (Trixie) in the variant")
    assert "Migrate by hand to Debian 13 (Trixie): Debian 10 (Buster) reached its end of life" in result.reason


def test_centos_7_to_centos_stream_is_another_image_so_it_is_done_by_hand() -> None:
    found = signals("trivy/trivy-0.22-fulldb_centos-7.json")
    (item,) = triage_rules(found, lifecycles=recorded()).work_items
    result = plan(item, found, {"Dockerfile": "FROM centos:7.6.1810\n"}, tags=lambda r: ["7", "7.9.2009"])
    assert isinstance(result, NotLocated)
    assert "centos: the line to move to, CentOS Stream 9, is another image than centos" in result.reason
    assert "Migrate by hand to CentOS Stream 9" in result.reason
    none = plan(item, found, SEED, tags=tags)  # no Dockerfile on CentOS 7 in the seed
    assert isinstance(none, NotLocated) and none.reason.startswith("no Dockerfile fixloop may change has a FROM on")
    assert "Migrate by hand to CentOS Stream 9" in none.reason


def test_a_python_3_7_image_moves_to_the_newest_python_3_10_tag_of_its_variant() -> None:
    """A runtime line's migration (tests/test_eol_runtimes.py: the real Grype report with only its artifact's name
    changed to ``python:3.7.10-slim``): the FROM on the Python 3.7 line moves to the newest ``-slim`` tag of 3.10,
    and its blast radius is the FROM lines on Python 3.7, with their services."""
    found = renamed(VULNERABLE_IMAGE, "python:3.7.10-slim")
    items = triage_rules(found, lifecycles=lifecycles()).work_items
    (item,) = [w for w in items if w.kind is WorkItemKind.EOL_MIGRATION]
    dockerfile = 'FROM python:3.7.10-slim\nCOPY . /app\nCMD ["python", "/app/main.py"]\n'
    repo = {**SEED, "services/py-api/Dockerfile": dockerfile}
    python_tags = ["3.7.17-slim", "3.10", "3.10.15", "3.10.15-slim", "3.10-slim", "3.12.8-slim"]
    result = plan(item, found, repo, tags=lambda r: python_tags if r == "python" else tags(r))
    assert isinstance(result, Plan)
    assert result.edits == {"services/py-api/Dockerfile": dockerfile.replace("3.7.10-slim", "3.10.15-slim")}
    major, blast = result.risks[:2]
    assert major.startswith("Major migration to Python 3.10, not a patch")
    assert "Debian 10 (Buster) reached its end of life on 2022-09-10" in major  # the OS line it also leaves
    assert blast == (
        "Blast radius: 1 FROM line(s) in 1 Dockerfile(s) on Python 3.7 in this repository: "
        "services/py-api/Dockerfile (py-api); this merge request moves services/py-api/Dockerfile."
    )
    both = {**repo, "services/py-worker/Dockerfile": "FROM python:3.7-slim AS build\nRUN true\n"}
    not_one = plan(item, found, both, tags=lambda r: python_tags if r == "python" else tags(r))
    assert isinstance(not_one, NotLocated) and not_one.reason.startswith(
        "several Dockerfiles are FROM python 3.7 (services/py-api/Dockerfile, services/py-worker/Dockerfile)"
    )
    assert "Migrate by hand to Python 3.10" in not_one.reason
