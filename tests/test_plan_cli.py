"""``fixloop plan``: the loop's triage and planning on a local checkout, offline.

The demo's reports planned on the folder the sandbox seeds its GitOps repository from give the merge requests the
loop opens in the sandbox GitLab for the same reports (the same work items, titles, descriptions and per-file
diffs, as GitLab shows them); exit status 1 names what could not be planned, 2 an unreadable input; the local
reader sees what git tracks and nothing outside the folder."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from temporalio.testing import ActivityEnvironment
from typer.testing import CliRunner

from fixloop.activities.triage import TriageActivities
from fixloop.app.cli import app
from fixloop.app.dryrun import LocalRepo, TagFile
from fixloop.app.ingest import ingest_file
from fixloop.core.change.policy import POLICY_FILE
from fixloop.integrations.gitlab.api import GitLabSettings
from fixloop.sandbox.registry import TAGS
from fixloop.sandbox.seed import SEED_DIR, seed_files
from fixloop.workflows.contracts.merge_request import OpenMergeRequestInput
from fixloop.workflows.contracts.plan import PlanChangeInput
from fixloop.workflows.contracts.triage import GroupSignalsInput
from tests.activities.sandbox_world import configured, running_world
from tests.activities.test_change_mr import mr_diffs
from tests.conftest import fixture

ROOT = Path(__file__).resolve().parents[1]
DEMO_REPORTS = sorted((ROOT / "examples" / "demo" / "reports").glob("*.json"))
PIP = "trivy/trivy-0.22-fulldb_pip.json"  # Werkzeug 0.11 in a requirements.txt
SCOPE = "platform/gitops"
runner = CliRunner()


def plan(*args: str | Path) -> tuple[int, str, str]:
    result = runner.invoke(app, ["plan", *map(str, args)], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def per_file(diff: str) -> dict[str, str]:
    """A unified diff as GitLab's MR changes show it: ``{path: the hunks}`` (the ``---``/``+++`` lines dropped)."""
    out: dict[str, str] = {}
    for part in re.split(r"^--- a/", diff, flags=re.MULTILINE)[1:]:
        header, _, hunks = part.partition("\n")
        plus, _, hunks = hunks.partition("\n")
        assert plus == f"+++ b/{header}", plus
        out[header] = hunks
    return out


@pytest.fixture
def tags(tmp_path: Path) -> Path:
    """The sandbox registry's tag lists (what the loop's registry lookup answers there) as a ``--tags`` file."""
    path = tmp_path / "tags.json"
    path.write_text(json.dumps(TAGS), encoding="utf-8")
    return path


async def test_the_demo_reports_give_the_merge_requests_the_loop_opens_in_the_sandbox(
    tmp_path: Path, tags: Path
) -> None:
    assert len(DEMO_REPORTS) == 3
    # the command runs its own event loop: in a thread of its own here
    code, out, err = await asyncio.to_thread(plan, "--repo", SEED_DIR, "--tags", tags, "--json", *DEMO_REPORTS)
    assert code == 0, err
    local = {item["id"]: item for item in json.loads(out)["items"]}
    assert all(item["planned"] for item in local.values())

    signals = [s for path in DEMO_REPORTS for s in ingest_file(path).signals]
    with running_world(tmp_path / "sandbox") as world:  # the loop's stages 2 and 3 as the worker runs them
        triage = TriageActivities(gitlab=configured(GitLabSettings, world.env))
        result = await ActivityEnvironment().run(triage.group_signals, GroupSignalsInput(scope=SCOPE, signals=signals))
        assert sorted(local) == sorted(item.id for item in result.work_items)
        for item in result.work_items:
            planned = await world.change.plan(PlanChangeInput(scope=SCOPE, work_item=item, signals=signals))
            mr = await world.gitlab.open_merge_request(
                OpenMergeRequestInput(scope=SCOPE, work_item=item, change=planned)
            )
            mine = local[item.id]
            assert (mine["title"], mine["branch"]) == (planned.title, mr.branch)
            assert mine["description"] == planned.description
            assert per_file(mine["diff"]) == mr_diffs(world, mr.iid)  # the whole diff of every file, as GitLab has it
            assert mine["files"] == sorted(mr_diffs(world, mr.iid))
    catalog = next(item for item in local.values() if item["kind"] == "os_rebuild")
    assert catalog["service"] == "catalog" and "+FROM alpine:3.9.6\n" in catalog["diff"]


def test_text_output_and_exit_1_name_what_could_not_be_planned(tmp_path: Path) -> None:
    code, out, err = plan("--repo", SEED_DIR, *DEMO_REPORTS)  # no --tags: the alpine base image is not bumped
    assert code == 1, err
    assert "=== catalog-os-rebuild-d1b6f08b45d56c90 (os_rebuild): not planned\n" in out
    assert "Why: alpine: not looked up: fixloop plan asks no registry (give the image's tags with --tags)" in out
    assert "=== payments-dependency-bump-b3c2f0ababecf5c9 (dependency_bump): planned\n" in out
    assert "-Werkzeug==0.11\n+Werkzeug==0.15.3\n" in out
    # Werkzeug 0.11 -> 0.15.3 is a 0.x minor jump: its MR says so first (the lines skipped from the advisories'
    # versions: fixloop plan asks no PyPI), and its title is marked (the loop's MR is the same: the test above)
    callout = (
        "--- MR description ---\n> **Breaking:** `Werkzeug` `0.11` \u2192 `0.15.3` is a 0.x minor jump (skips 0.12 by "
        "the versions the advisories name; no release list was read: PyPI lookups are off): read its release notes "
        "before approving.\n\nfixloop work item `payments-dependency-bump-"
    )
    assert callout in out
    assert "MR title: Breaking: Bump Werkzeug 0.11 \u2192 0.15.3 in services/payments (fixes 5 advisories" in out
    assert "release notes: not looked up: PyPI lookups are off" in out
    assert out.endswith("2 of 3 work items planned on " + str(SEED_DIR.resolve()) + "\n")

    repo = tmp_path / "repo"  # a repository without the requirements file the report names
    (repo / "services" / "payments").mkdir(parents=True)
    (repo / "services" / "payments" / "requirements.txt").write_text("Django==3.2.9\n", encoding="utf-8")
    code, out, err = plan("--repo", repo, "--json", fixture(PIP))
    assert code == 1, err
    (item,) = json.loads(out)["items"]
    assert (item["planned"], item["diff"], item["kind"]) == (False, None, "dependency_bump")
    assert "Werkzeug" in item["reason"] and item["title"].startswith("Bump Werkzeug 0.11 → 0.15.3")


def test_a_policy_that_refuses_the_change_is_exit_1_with_its_reason(tmp_path: Path) -> None:
    policy = tmp_path / "fixloop.yaml"
    for text, reason in (
        ("deny:\n  - services/payments/**\n", "Werkzeug: no file fixloop may change pins it at 0.11"),
        ("limits:\n  max_changed_lines: 1\n", "the change fails validation: changes 2 lines, more than the limit of 1"),
    ):
        policy.write_text(text, encoding="utf-8")
        code, out, err = plan("--repo", SEED_DIR, "--policy", policy, "--json", fixture(PIP))
        assert code == 1, err
        (item,) = json.loads(out)["items"]
        assert (item["planned"], item["reason"]) == (False, reason)
    code, out, err = plan("--repo", SEED_DIR, "--json", fixture(PIP))  # the seed's own fixloop.yaml allows it
    assert code == 0 and json.loads(out)["items"][0]["planned"], err


def test_an_unreadable_report_is_exit_2_and_the_others_are_still_planned(tmp_path: Path) -> None:
    bad = tmp_path / "broken.json"
    bad.write_text('{"SchemaVersion": 2, "Results": [', encoding="utf-8")
    code, out, err = plan("--repo", SEED_DIR, "--json", bad, fixture(PIP), tmp_path / "missing.json")
    assert code == 2
    lines = err.splitlines()
    assert any(line.startswith(f"fixloop plan: {bad}: ") for line in lines), err
    assert any(line.startswith(f"fixloop plan: {tmp_path / 'missing.json'}: ") for line in lines), err
    (item,) = json.loads(out)["items"]
    assert item["planned"] and "+Werkzeug==0.15.3\n" in item["diff"]


def test_unusable_repository_policy_or_tags_are_exit_2_before_planning(tmp_path: Path) -> None:
    report = fixture(PIP)
    code, out, err = plan("--repo", tmp_path / "nowhere", report)
    assert (code, out) == (2, "") and "--repo" in err
    malformed = tmp_path / "fixloop.yaml"
    malformed.write_text("limits: [1, 2\n", encoding="utf-8")
    code, out, err = plan("--repo", SEED_DIR, "--policy", malformed, report)
    assert (code, out) == (2, "")
    assert err.startswith("fixloop plan: --policy: fixloop.yaml: is not a valid policy (") and err.count("\n") == 1
    tags = tmp_path / "tags.json"
    tags.write_text('{"alpine": "3.9.6"}', encoding="utf-8")
    code, out, err = plan("--repo", SEED_DIR, "--tags", tags, report)
    assert (code, out) == (2, "")
    assert err.startswith(f"fixloop plan: {tags}: not a JSON object of tag lists (field alpine: ")
    assert err.count("\n") == 1


def test_tags_of_docker_hub_images_are_found_under_every_spelling() -> None:
    lookup = TagFile({"docker.io/library/alpine": ["3.9.6"], "ghcr.io/acme/base": ["1.2"]})
    assert lookup("alpine") == lookup("library/alpine") == lookup("index.docker.io/library/alpine") == ["3.9.6"]
    assert lookup("ghcr.io/acme/base") == ["1.2"] and lookup("debian") == []
    assert lookup.failed == {"debian": "the --tags file lists no tags of debian"}


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_a_git_working_tree_lists_what_git_tracks_and_the_seed_folder_is_the_seeded_repository(
    tmp_path: Path,
) -> None:
    repo = tmp_path / "repo"
    (repo / "node_modules" / "left-pad").mkdir(parents=True)
    (repo / "node_modules" / "left-pad" / "package.json").write_text("{}", encoding="utf-8")
    (repo / ".gitignore").write_text("node_modules/\n", encoding="utf-8")
    (repo / "package.json").write_text("{}\n", encoding="utf-8")
    (repo / "new.txt").write_text("not committed yet\n", encoding="utf-8")
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "add", ".gitignore", "package.json"], check=True)
    local = LocalRepo.open(repo)
    assert list(local.list()) == [".gitignore", "new.txt", "package.json"] and local.git
    assert local.read("node_modules/left-pad/package.json") == "{}"  # read when asked, as GitLab would not list it

    seed = LocalRepo.open(SEED_DIR)
    assert {path: seed.read(path) for path in seed.list()} == seed_files()


def test_nothing_outside_the_folder_is_read(tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("outside\n", encoding="utf-8")
    repo = tmp_path / "repo"
    (repo / "apps").mkdir(parents=True)
    (repo / "apps" / "a.yaml").write_text("a: 1\n", encoding="utf-8")
    (repo / "apps" / "big.yaml").write_text("x" * 101, encoding="utf-8")
    (repo / "link.txt").symlink_to(outside)
    (repo / "linked").symlink_to(tmp_path)
    local = LocalRepo(repo.resolve(), max_bytes=100)
    assert list(local.list()) == ["apps/a.yaml", "apps/big.yaml"]
    for path in ("../secret.txt", "link.txt", "linked/secret.txt", "/etc/hostname", "apps/../../secret.txt", ""):
        assert local.read(path) is None, path
    assert local.read("apps/a.yaml") == "a: 1\n" and local.read("apps/big.yaml") is None  # over max_bytes
    assert local.read_head("apps/big.yaml", 3) == b"xxx"
    policy = LocalRepo(repo.resolve(), "allow: [apps/**]\n")
    assert policy.read(POLICY_FILE) == "allow: [apps/**]\n" and POLICY_FILE in policy.list()


PARTS = ["..", ".", "", "apps", "a.yaml", "secret.txt", "linked", "/", "\\", "\x00"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(PARTS), max_size=6))
def test_any_path_reads_a_file_of_the_folder_or_nothing(
    tmp_path_factory: pytest.TempPathFactory, parts: list[str]
) -> None:
    base = tmp_path_factory.getbasetemp() / "plan-paths"
    repo = base / "repo"
    if not repo.exists():
        (repo / "apps").mkdir(parents=True)
        (repo / "apps" / "a.yaml").write_text("inside\n", encoding="utf-8")
        (base / "secret.txt").write_text("outside\n", encoding="utf-8")
        (repo / "linked").symlink_to(base)
    text = LocalRepo(repo.resolve()).read("/".join(parts))
    assert text in (None, "inside\n")


def test_the_repositorys_version_drift_is_reported_after_the_work_items(tmp_path: Path) -> None:
    """A copy of the seeded repository with a second Python service on newer Werkzeug and Django pins: the text
    output lists both packages with the newest version as the target, ``--json`` gives the same under ``drift``;
    the seeded repository alone pins each package once (no drift section)."""
    repo = tmp_path / "repo"
    shutil.copytree(SEED_DIR, repo)
    (repo / "services" / "checkout").mkdir()
    (repo / "services" / "checkout" / "requirements.txt").write_text(
        "Werkzeug==2.3.8\nDjango==3.2.9\ndjango-extensions==3.2.3\n", encoding="utf-8"
    )
    code, out, err = plan("--repo", repo, fixture(PIP))
    assert code == 0, err
    assert "=== Version drift: 1 package pinned at several versions\n" in out
    assert (
        "werkzeug (pypi): 2.3.8 in services/checkout/requirements.txt; 0.11 in services/payments/requirements.txt"
        " (consolidate on 2.3.8)\n" in out
    )
    code, out, err = plan("--repo", repo, "--json", fixture(PIP))
    drift = json.loads(out)["drift"]
    assert [(d["package"], d["target"], [v["services"] for v in d["versions"]]) for d in drift] == [
        ("werkzeug", "2.3.8", [["checkout"], ["payments"]])
    ]
    code, out, err = plan("--repo", SEED_DIR, "--json", fixture(PIP))
    assert json.loads(out)["drift"] == [] and "Version drift" not in plan("--repo", SEED_DIR, fixture(PIP))[1]


def test_the_folders_grouping_decides_the_work_items_planned(tmp_path: Path) -> None:
    """``grouping: per-package`` in the folder's ``fixloop.yaml``: pip-audit's list (it names no file) is one work
    item per package, django's bumped in both services that pin it; without the key, today's one item for the list,
    located in payments (where all three are pinned), so only payments' django is bumped."""
    from tests.change.shared_pins import SHARED

    audit = fixture("pip-audit/dd-pip-audit_legacy-list-format_many_vulns.json")
    for grouping in ("", "grouping: per-package\n"):
        repo = tmp_path / (grouping[10:-1] or "default")
        for path, text in SHARED.items():
            (repo / path).parent.mkdir(parents=True, exist_ok=True)
            (repo / path).write_text(text + (grouping if path == POLICY_FILE else ""), encoding="utf-8")
        code, out, err = plan("--repo", repo, "--json", audit)
        assert code in (0, 1), err
        bumps = [i for i in json.loads(out)["items"] if i["kind"] == "dependency_bump"]
        if grouping:
            assert len(bumps) == 3 and all(i["planned"] for i in bumps)
            (django,) = [i for i in bumps if "django" in i["title"].lower()]
            assert django["files"] == ["services/legacy-api/requirements.txt", "services/payments/requirements.txt"]
        else:
            (item,) = bumps
            assert item["files"] == ["services/payments/requirements.txt"] and item["service"] == "payments"
            assert item["title"].startswith("Breaking: Bump 3 Python packages in services/payments")
