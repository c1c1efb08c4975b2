"""The merge request text: title, findings table, not-fixable list, risks, rollback, Jira link, read-back block."""

from __future__ import annotations

from datetime import UTC, date, datetime

from fixloop.core.change import Plan, plan
from fixloop.core.change.facts import ChangeFacts, Cycle, Lifecycle, Link, PackageRelease, dependency_roles, lifecycle
from fixloop.core.change.mr import DEV_ONLY_VERIFICATION, ROLLBACK, read_back, render, text
from fixloop.core.models import Signal, WorkItem, WorkItemKind
from fixloop.core.verification import VerificationPolicy, describe_plan
from fixloop.integrations.pypi import parse_release
from tests.change.helpers import SEED, tags, work_item
from tests.change.markup_checks import markdown_constructs

JIRA = {"jira_key": "SEC-12", "jira_url": "https://jira.sandbox.local/browse/SEC-12"}


def test_base_image_mr() -> None:
    item, found = work_item("trivy/trivy-head_alpine-39.json", WorkItemKind.OS_REBUILD)
    result = plan(item, found, SEED, tags=tags)
    assert isinstance(result, Plan)
    mr = render(item, result, found, **JIRA)
    assert mr.title == "Bump alpine base image 3.9.4 → 3.9.6 (fixes 3 CVEs: 1 critical, 2 medium)"
    assert mr.labels == ["fixloop", "security", "fixloop::os_rebuild", "severity::critical"]
    lines = mr.description.splitlines()
    assert "Jira: [SEC-12](https://jira.sandbox.local/browse/SEC-12)" in lines
    assert (
        "| [CVE-2019-14697](https://nvd.nist.gov/vuln/detail/CVE-2019-14697) | `musl` | `1.1.20-r4` → `1.1.20-r5` "
        "| critical |" in lines
    )
    assert ROLLBACK in lines
    assert read_back(mr.description) == {
        "branch": f"fixloop/{item.id}",
        "operations": [
            {
                "current": "alpine:3.9.4",
                "new": "alpine:3.9.6",
                "op": "bump_base_image",
                "path": "services/catalog/Dockerfile",
                "stage": 0,
            }
        ],
        "version": 1,
        "work_item": item.id,
    }
    again = render(item, plan(item, found, SEED, tags=tags), found, **JIRA)  # type: ignore[arg-type]
    assert again == mr


def test_python_mr_names_the_service_links_osv_and_lists_risks() -> None:
    item, found = work_item("trivy/trivy-0.22-fulldb_pip.json", WorkItemKind.DEPENDENCY_BUMP)
    result = plan(item, found, SEED)
    assert isinstance(result, Plan)
    mr = render(item, result, found)
    assert mr.title == (
        "Breaking: Bump Werkzeug 0.11 → 0.15.3 in services/payments (fixes 5 advisories: 1 high, 1 medium, 3 unknown)"
    )
    assert "| `pyup.io-26435` | `Werkzeug` | `0.11` → `0.15.3` | unknown |" in mr.description
    assert "- Werkzeug 0.11 → 0.15.3: 0.x minor version change (may break the API)" in mr.description
    assert "Jira:" not in mr.description


def test_multi_package_mr_and_not_fixable_section() -> None:
    files = {k: v for k, v in SEED.items()}
    files["services/payments/requirements.txt"] = files["services/payments/requirements.txt"].replace(
        "Twisted==18.9.0\n", ""
    )
    item, found = work_item("pip-audit/dd-pip-audit_legacy-list-format_many_vulns.json", WorkItemKind.DEPENDENCY_BUMP)
    result = plan(item, found, files)
    assert isinstance(result, Plan)
    mr = render(item, result, found)
    assert mr.title == "Bump 2 Python packages in services/payments (fixes 2 advisories: 2 unknown)"
    assert "### Not fixed by this MR\n- `twisted`: no file fixloop may change pins it at 18.9.0\n" in mr.description
    assert "[PYSEC-2021-439](https://osv.dev/vulnerability/PYSEC-2021-439)" in mr.description


def test_text_escaping() -> None:
    assert text("a <b> [x](https://e.example) @all #12 *y* -> z") == (
        "a \\<b> \\[x\\](https:\u200b//e.example) @\u200ball \\#\u200b12 \\*y\\* -> z"
    )


# ---------------------------------------------------------------- what the change is: roles, releases, lifecycle

TODAY = date(2026, 5, 1)
WERKZEUG = PackageRelease(  # as parse_release reads PyPI's GET /pypi/Werkzeug/0.15.3/json
    ecosystem="pypi",
    package="Werkzeug",
    version="0.15.3",
    released_at=datetime(2019, 5, 14, 17, 13, 59, tzinfo=UTC),
    links=[
        Link(label="changelog", url="https://werkzeug.palletsprojects.com/changes/"),
        Link(label="source", url="https://github.com/pallets/werkzeug/"),
        Link(label="PyPI", url="https://pypi.org/project/Werkzeug/0.15.3/"),
    ],
)
ALPINE = [
    Cycle(cycle="3.21", eol=date(2026, 11, 1), release_date=date(2024, 12, 5)),
    Cycle(cycle="3.9", eol=date(2020, 11, 1), release_date=date(2018, 12, 6)),
]
PAYMENTS = "services/payments/requirements.txt"


def werkzeug_plan(files: dict[str, str]) -> tuple[WorkItem, Plan, list[Signal]]:
    item, found = work_item("trivy/trivy-0.22-fulldb_pip.json", WorkItemKind.DEPENDENCY_BUMP)
    result = plan(item, found, files)
    assert isinstance(result, Plan)
    return item, result, found


def test_a_transitive_package_with_its_release_age_and_links() -> None:
    files = {**SEED, PAYMENTS: SEED[PAYMENTS].replace("Werkzeug==0.11\n", "Werkzeug==0.11\n    # via flask\n")}
    item, result, found = werkzeug_plan(files)
    facts = ChangeFacts(looked_up_on=TODAY, roles=dependency_roles(result.operations, files), releases=[WERKZEUG])
    description = render(item, result, found, facts=facts).description
    section = description.split("### Packages\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert section == [
        "- `Werkzeug` `0.11` → `0.15.3`: a transitive runtime dependency (via `flask`); released 2019-05-14, 6 years "
        "ago; [changelog](https://werkzeug.palletsprojects.com/changes/), "
        "[source](https://github.com/pallets/werkzeug/), [PyPI](https://pypi.org/project/Werkzeug/0.15.3/)",
        "  - `Werkzeug` is a transitive dependency (via `flask`): the service does not use it directly; check that "
        "`flask` supports `0.15.3`.",
    ]
    assert description.index("### Changes") < description.index("### Packages") < description.index("### Findings")
    assert DEV_ONLY_VERIFICATION not in description
    assert render(item, result, found).description.count("### Packages") == 0  # no facts, no section


def test_a_dev_only_package_says_runtime_metrics_prove_little() -> None:
    dev = "services/payments/requirements-dev.txt"
    files = {k: v for k, v in SEED.items() if k != PAYMENTS} | {dev: SEED[PAYMENTS]}
    item, result, found = werkzeug_plan(files)
    offline = PackageRelease(
        ecosystem="pypi", package="Werkzeug", version="0.15.3", missing="not looked up: PyPI unreachable"
    )
    facts = ChangeFacts(looked_up_on=TODAY, roles=dependency_roles(result.operations, files), releases=[offline])
    text_ = render(item, result, found, facts=facts, verification=describe_plan(VerificationPolicy(), "payments"))
    lines = text_.description.splitlines()
    assert (
        "- `Werkzeug` `0.11` → `0.15.3`: a direct dev-only dependency (`dev`); release notes: not looked up: PyPI "
        "unreachable" in lines
    )
    assert (
        "  - `Werkzeug` is a dev-only dependency: it does not run in the deployed service, so runtime metrics after "
        "the deploy prove little about this change; the CI pipeline is its test." in lines
    )
    verification = text_.description.split("### Verification\n", 1)[1].split("### Rollback", 1)[0]
    assert DEV_ONLY_VERIFICATION in verification
    assert "error rate in errors/s" in verification and "latency p95 in ms" in verification  # units
    assert "request rate in req/s" in verification and "p < 0.01" in verification


def test_a_base_image_on_an_ended_line_says_so() -> None:
    item, found = work_item("trivy/trivy-head_alpine-39.json", WorkItemKind.OS_REBUILD)
    result = plan(item, found, SEED, tags=tags)
    assert isinstance(result, Plan)
    life = [lifecycle("alpine:3.9.6", "alpine", "Alpine", "3.9.6", ALPINE)]
    ended = render(item, result, found, facts=ChangeFacts(looked_up_on=TODAY, lifecycles=life)).description
    assert (
        "### Lifecycle\n- `alpine:3.9.6`: **Alpine 3.9 reached end of life on 2020-11-01** (5 years ago): no more "
        "security fixes; the newest release line is 3.21\n" in ended
    )
    supported = [lifecycle("alpine:3.9.6", "alpine", "Alpine", "3.9.6", [ALPINE[1].model_copy(update={"eol": False})])]
    text_ = render(item, result, found, facts=ChangeFacts(looked_up_on=TODAY, lifecycles=supported)).description
    assert "- `alpine:3.9.6`: Alpine 3.9 has no announced end of life\n" in text_
    offline = [
        Lifecycle(
            image="alpine:3.9.6", product="alpine", label="Alpine", missing="not looked up: endoflife.date unreachable"
        )
    ]
    text_ = render(item, result, found, facts=ChangeFacts(looked_up_on=TODAY, lifecycles=offline)).description
    assert "- `alpine:3.9.6`: Alpine: end of life: not looked up: endoflife.date unreachable\n" in text_
    other = [lifecycle("alpine:3.10.9", "alpine", "Alpine", "3.10.9", ALPINE)]  # not an image this change runs
    assert (
        "### Lifecycle"
        not in render(item, result, found, facts=ChangeFacts(looked_up_on=TODAY, lifecycles=other)).description
    )


def test_hostile_registry_text_stays_inert_and_the_raw_text_has_no_entities() -> None:
    files = {**SEED, PAYMENTS: SEED[PAYMENTS].replace("Werkzeug==0.11\n", "Werkzeug==0.11\n    # via flask\n")}
    item, result, found = werkzeug_plan(files)
    body = {
        "info": {
            "project_urls": {
                "Changelog": "javascript:alert(document.cookie)",
                "Source": "https://evil.example/x)[y](javascript:alert(1)",
                "Homepage": "https://ok.example/werkzeug",
            },
            "yanked": True,
            "yanked_reason": "<img src=x onerror=alert(1)> [click](https://evil.example) @all -> use 1.0 & up",
        },
        "urls": [{"upload_time_iso_8601": "2019-05-14T17:13:59.123Z"}],
    }
    release = parse_release(body, "Werkzeug", "0.15.3")
    facts = ChangeFacts(looked_up_on=TODAY, roles=dependency_roles(result.operations, files), releases=[release])
    description = render(
        item, result, found, facts=facts, verification=describe_plan(VerificationPolicy(), "x")
    ).description
    packages = description.split("### Packages\n", 1)[1].split("\n\n", 1)[0]
    assert "javascript" not in description and "evil.example/x)" not in description
    assert "[homepage](https://ok.example/werkzeug)" in packages
    assert (
        "**yanked** from PyPI: \\<img src=x onerror=alert(1)> \\[click\\](https:\u200b//evil.example) "
        "@\u200ball -> use 1.0 & up" in packages
    )
    assert "&gt;" not in description and "&lt;" not in description and "&amp;" not in description
    for line in packages.splitlines():
        untrusted = line.split("**yanked** from PyPI: ", 1)[-1].split(";", 1)[0] if "yanked" in line else ""
        assert markdown_constructs(untrusted) == [], untrusted
