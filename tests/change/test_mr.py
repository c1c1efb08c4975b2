"""The merge request text: title, findings table, not-fixable list, risks, rollback, Jira link, read-back block."""

from __future__ import annotations

from fixloop.core.change import Plan, plan
from fixloop.core.change.mr import ROLLBACK, read_back, render, text
from fixloop.core.models import WorkItemKind
from tests.change.helpers import SEED, tags, work_item

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
        "Bump Werkzeug 0.11 → 0.15.3 in services/payments (fixes 5 advisories: 1 high, 1 medium, 3 unknown)"
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
