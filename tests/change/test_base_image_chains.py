"""Base-image chains (``fixloop.core.change.images``): which ``images:`` entry is built FROM which, read from their
Dockerfiles (ARG defaults included); images FROM each other refused by name; a base image's change delivered
through its dependents (capped, the others named); each dependent rebuilt FROM the base's new tag; and the
``os_rebuild`` of a dependent's scan planned in the base's Dockerfile."""

from __future__ import annotations

import graphlib
from collections.abc import Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fixloop.activities.plan import ChangePlanner
from fixloop.core.change import Plan, plan
from fixloop.core.change.edit import apply
from fixloop.core.change.images import (
    DEPENDENTS_MAX,
    ImageChain,
    ImageChainError,
    ImageCycleError,
    delivery_of,
    rebuild_ops,
)
from fixloop.core.change.locate import MappingRepo, runtime_dockerfile
from fixloop.core.change.mr import delivery_section
from fixloop.core.change.ops import BumpBaseImage, PolicyViolation
from fixloop.core.change.plan import policy_of
from fixloop.core.models import WorkItemKind
from fixloop.core.naming import rebuilt_on
from fixloop.workflows.contracts.plan import PlanDependentInput
from tests.change.helpers import SEED, tags, work_item
from tests.sandbox.chain import BASE, BASE_DOCKERFILE, chain_files

SNYK_LEGACY = "snyk/synthetic_snyk-container_debian-10_file-dockerfile.json"  # registry.sandbox.local/shop/legacy-api
REPO = {**SEED, **chain_files()}
CHAIN = policy_of(MappingRepo(REPO)).chain


def chain_of(images: Mapping[str, str], tag: str = "semver-patch") -> ImageChain:
    """``images:`` of ``name -> source`` (image ``r.io/shop/<name>``)."""
    return ImageChain.from_policy(
        {n: {"source": s, "image": f"r.io/shop/{n}", "tag": tag} for n, s in images.items()}, None
    )


def test_the_graph_is_read_from_each_image_s_dockerfile() -> None:
    graph = CHAIN.graph(MappingRepo(REPO).read)
    assert [(d.name, d.dockerfile, d.stage, d.current, d.tag) for d in graph.dependents("base-python")] == [
        ("legacy-api", "services/legacy-api/Dockerfile", 0, f"{BASE}:1.3.0", "1.3.0"),
        ("payments", "services/payments/Dockerfile", 0, f"{BASE}:1.3.0", "1.3.0"),
    ]
    assert graph.bases_of["payments"] == ("base-python",) and graph.bases_of["base-python"] == ()
    assert graph.runtime["legacy-api"] == "base-python" and graph.runtime["catalog"] is None
    order = graph.order()
    assert order.index("base-python") < min(order.index("legacy-api"), order.index("payments"))
    assert graph.dependents("catalog") == () and graph.runtime_chain("legacy-api") == ("legacy-api", "base-python")


def test_a_from_through_arg_defaults_a_builder_stage_and_depth_two() -> None:
    chain = chain_of({"base": "img/base", "web": "img/web", "app": "img/app", "tool": "img/tool"})
    files = {
        "img/base/Dockerfile": "FROM debian:12.5\n",
        # the base's tag in an ARG default made of two others, FROM it by name in a later stage
        "img/web/Dockerfile": (
            "ARG REG=r.io/shop\nARG V=2.0.1\nARG BASE=${REG}/base:${V}\n"
            "FROM ${BASE} AS runtime\nRUN true\nFROM runtime\n"
        ),
        # a builder stage on the base, the runtime on web: both are bases of app, web the one it runs on
        "img/app/Dockerfile": "FROM r.io/shop/base:2.0.1 AS build\nFROM r.io/shop/web:7.1.0\nCOPY --from=build /a /a\n",
        "img/tool/Dockerfile": "FROM r.io/shop/base@sha256:" + "a" * 64 + "\n",  # by digest: a dependent, no tag
    }
    graph = chain.graph(files.get)
    assert [(d.name, d.stage, d.current, d.tag) for d in graph.dependents("base")] == [
        ("web", 0, "r.io/shop/base:2.0.1", "2.0.1"),
        ("app", 0, "r.io/shop/base:2.0.1", "2.0.1"),
        ("tool", 0, "r.io/shop/base@sha256:" + "a" * 64, None),
    ]
    assert [d.name for d in graph.dependents("web")] == ["app"]
    assert graph.order() == ("base", "web", "app", "tool")
    assert graph.runtime_chain("app") == ("app", "web", "base")  # the OS of app is base's
    assert graph.runtime_chain("web") == ("web", "base")  # FROM runtime: followed to the stage it names


@pytest.mark.parametrize(
    ("files", "cycle"),
    [
        ({"a/Dockerfile": "FROM r.io/shop/b:1.0.0\n", "b/Dockerfile": "FROM r.io/shop/a:1.0.0\n"}, "a -> b -> a"),
        ({"a/Dockerfile": "FROM r.io/shop/a:1.0.0\n"}, "a -> a"),
        (
            {
                "a/Dockerfile": "FROM r.io/shop/c:1.0.0\n",
                "b/Dockerfile": "ARG A=r.io/shop/a:1\nFROM ${A}\n",
                "c/Dockerfile": "FROM alpine:3.20 AS x\nFROM r.io/shop/b:3.1.4\n",
            },
            "a -> c -> b -> a",
        ),
    ],
)
def test_images_built_from_each_other_are_refused_naming_the_cycle(files: dict[str, str], cycle: str) -> None:
    chain = chain_of({"a": "a", "b": "b", "c": "c", "lone": "lone"})
    graph = chain.graph(files.get)
    with pytest.raises(ImageCycleError, match=f"^images: {cycle}: each is built FROM the next") as e:
        graph.order()
    assert "a/Dockerfile" in str(e.value)
    with pytest.raises(ImageCycleError):
        delivery_of(chain, ["a/Dockerfile"], files.get)
    assert graph.dependents("lone") == ()  # an image the cycle does not reach is still followed


def test_a_base_image_s_change_is_delivered_through_its_dependents() -> None:
    delivery = delivery_of(CHAIN, [BASE_DOCKERFILE], MappingRepo(REPO).read, "base-python")
    assert delivery.image is not None and delivery.image.name == "base-python" and delivery.workload is None
    assert [d.name for d in delivery.dependents] == ["legacy-api", "payments"] and delivery.dependents_cut == ()
    assert delivery.base_tag == "1.3.0" == delivery.tag_before()
    assert [(t.name, t.current_tag) for t in delivery.targets] == [("staging", None), ("production", None)]
    section = "\n".join(delivery_section(delivery))
    assert f"the base image `{BASE}`" in section and "it runs in no environment itself" in section
    assert f"- `legacy-api`: `services/legacy-api/Dockerfile` FROM `{BASE}:1.3.0`" in section
    # a dependent's change is an ordinary source change: its own environments
    legacy = delivery_of(CHAIN, ["services/legacy-api/Dockerfile"], MappingRepo(REPO).read, "legacy-api")
    assert legacy.dependents == () and [t.current_tag for t in legacy.targets] == ["2.0.7", "2.0.7"]


def test_dependents_over_the_cap_are_named_and_the_highest_semver_tag_is_the_base() -> None:
    names = [f"svc{i:02}" for i in range(DEPENDENTS_MAX + 2)]
    chain = chain_of({"base": "base", **{n: n for n in names}})
    files = {"base/Dockerfile": "FROM debian:12\n"}
    files |= {f"{n}/Dockerfile": f"FROM r.io/shop/base:1.{i % 3}.{i}\n" for i, n in enumerate(names)}
    delivery = delivery_of(chain, ["base/Dockerfile"], files.get)
    assert [d.name for d in delivery.dependents] == names[:DEPENDENTS_MAX]
    assert delivery.dependents_cut == tuple(names[DEPENDENTS_MAX:])
    assert delivery.base_tag == "1.2.11"  # 1.2.11 > 1.1.10 > 1.0.9 > ... (numbers, not text)
    assert "not followed (over 10 dependents): `svc10`, `svc11`" in "\n".join(delivery_section(delivery))


def test_semver_patch_needs_a_major_minor_patch_from_tag_and_sha_does_not() -> None:
    files = {"base/Dockerfile": "FROM debian:12\n", "app/Dockerfile": "FROM r.io/shop/base:1.3\n"}
    with pytest.raises(ImageChainError, match=r"semver-patch: the dependents of base FROM it at 1\.3, not MAJOR"):
        delivery_of(chain_of({"base": "base", "app": "app"}), ["base/Dockerfile"], files.get)
    delivery = delivery_of(chain_of({"base": "base", "app": "app"}, tag="sha"), ["base/Dockerfile"], files.get)
    assert delivery.base_tag == "1.3" and [d.name for d in delivery.dependents] == ["app"]


def test_rebuild_ops_bump_every_from_of_the_base_once_per_arg() -> None:
    base = CHAIN.image("base-python")
    dep = CHAIN.graph(MappingRepo(REPO).read).dependents("base-python")[0]
    assert base is not None
    text = f"ARG B={BASE}:1.3.0\nFROM ${{B}} AS build\nRUN make\nFROM ${{B}}\nFROM {BASE}:1.2.9 AS old\n"
    ops = rebuild_ops(text, dep, base, "1.3.1")
    assert [(op.stage, op.current, op.new) for op in ops] == [
        (0, f"{BASE}:1.3.0", f"{BASE}:1.3.1"),  # the ARG: stage 1 with it
        (2, f"{BASE}:1.2.9", f"{BASE}:1.3.1"),
    ]
    edits, _ = apply(ops, {dep.dockerfile: text}.get)
    assert edits[dep.dockerfile] == text.replace("1.3.0", "1.3.1").replace("1.2.9", "1.3.1")
    assert rebuild_ops(edits[dep.dockerfile], dep, base, "1.3.1") == []  # already rebuilt: nothing to do
    with pytest.raises(PolicyViolation, match="no stage is FROM registry.sandbox.local/shop/base-python any more"):
        rebuild_ops("FROM debian:10.2\n", dep, base, "1.3.1")
    with pytest.raises(PolicyViolation, match="without a tag or by digest"):
        rebuild_ops(f"FROM {BASE}\n", dep, base, "1.3.1")
    with pytest.raises(ImageChainError, match="is not an OCI tag"):
        rebuild_ops(text, dep, base, "1.3.1\nRUN curl evil")


def test_a_dependent_s_os_rebuild_is_planned_in_its_base_s_dockerfile() -> None:
    """Snyk scanned legacy-api (debian 10): legacy-api runs on base-python, whose Dockerfile is FROM debian:10.2.
    catalog's Dockerfile is on debian 10.2 too; without the chain the scan would not say which to change."""
    repo = {**REPO, "services/catalog/Dockerfile": "FROM debian:10.2\n"}
    item, found = work_item(SNYK_LEGACY, WorkItemKind.OS_REBUILD)
    assert runtime_dockerfile(item, found, MappingRepo(repo), policy_of(MappingRepo(repo))) == BASE_DOCKERFILE
    result = plan(item, found, repo, tags=tags)
    assert isinstance(result, Plan), result
    assert [(op.path, op.current, op.new) for op in result.operations if isinstance(op, BumpBaseImage)] == [
        (BASE_DOCKERFILE, "debian:10.2", "debian:10.13")
    ]
    unchained = {**repo, "fixloop.yaml": SEED["fixloop.yaml"]}  # the same Dockerfiles, base-python not an image
    assert "several Dockerfiles are FROM debian 10" in getattr(plan(item, found, unchained, tags=tags), "reason", "")


def test_the_rebuild_of_a_dependent_is_planned_with_its_own_delivery() -> None:
    base = CHAIN.image("base-python")
    assert base is not None
    dep = CHAIN.graph(MappingRepo(REPO).read).dependents("base-python")[1]
    parent, _ = work_item(SNYK_LEGACY, WorkItemKind.OS_REBUILD)
    item = rebuilt_on(parent, dep.name, base.name, "1.3.1")
    assert item.id.startswith("payments-os-rebuild-") and item.id == rebuilt_on(parent, "payments", "x", "y").id
    assert item.title.startswith("Rebuild payments on base-python 1.3.1 (") and item.service == "payments"
    inp = PlanDependentInput(
        scope="platform/gitops", work_item=item, base=base, dependent=dep, tag="1.3.1", digest="sha256:" + "d" * 64,
        source_sha="c" * 40, source_iid=12, jira_key="OPS-4",
    )  # fmt: skip
    planned = ChangePlanner().plan_dependent_at(inp, MappingRepo(REPO), "e" * 40)
    assert planned.located and planned.branch == f"fixloop/{item.id}" and planned.service == "payments"
    assert planned.operations == [
        f"services/payments/Dockerfile: FROM {BASE}:1.3.0 -> {BASE}:1.3.1 (stage 0)"
    ]
    assert planned.delivery is not None and planned.delivery.image is not None
    assert planned.delivery.image.name == "payments" and [t.current_tag for t in planned.delivery.targets] == [
        "1.9.1", "1.9.1"
    ]  # fmt: skip
    description = planned.description or ""
    assert "Jira: OPS-4 (the base-image chain's issue)" in description
    assert f"CI built `{BASE}:1.3.1` (`sha256:{'d' * 64}`) from `cccccccccccc`, the merge of !12" in description
    assert "### Delivery" in description and "fixloop::base-image-chain" in planned.labels
    rebuilt = {**REPO, dep.dockerfile: REPO[dep.dockerfile].replace("1.3.0", "1.3.1")}
    again = ChangePlanner().plan_dependent_at(inp, MappingRepo(rebuilt), "e" * 40)
    assert (again.located, again.running) == (False, True) and "already FROM" in (again.reason or "")
    gone = {**REPO, dep.dockerfile: "FROM python:3.9.7-slim\n"}
    refused = ChangePlanner().plan_dependent_at(inp, MappingRepo(gone), "e" * 40)
    assert not refused.located and "no stage is FROM" in (refused.reason or "")


# --- input boundaries ---------------------------------------------------------------------------------------------

NAMES = ("a", "b", "c", "d", "e")
_ref = st.sampled_from(NAMES).map(lambda n: f"r.io/shop/{n}")
_tag = st.sampled_from(["1.0.0", "2.3.4", "latest", "1.3", "@sha256:" + "b" * 64, ""])
_from = st.one_of(
    st.tuples(_ref, _tag).map(lambda rt: f"FROM {rt[0]}{rt[1] if rt[1].startswith('@') or not rt[1] else ':' + rt[1]}"),
    st.tuples(_ref, _tag).map(lambda rt: f"ARG X={rt[0]}:{rt[1].lstrip('@') or '1'}\nFROM $X"),
    st.sampled_from(["FROM debian:12", "FROM scratch", "FROM build", "FROM ${NOPE}", "FROM", "RUN x", "FROM a AS b"]),
    st.text(max_size=60),
)


@given(st.dictionaries(st.sampled_from(NAMES), st.lists(_from, max_size=4).map("\n".join), max_size=5))
def test_any_dockerfiles_give_a_graph_or_a_named_cycle(texts: dict[str, str]) -> None:
    """The graph of any Dockerfile texts is consistent (each dependent lists its base, the runtime image is a base)
    and its order exists exactly when the FROMs hold no cycle (checked against ``graphlib``)."""
    chain = chain_of({n: n for n in NAMES})
    graph = chain.graph(lambda path: texts.get(path.split("/")[0]))
    for base in NAMES:
        for dep in graph.dependents_of[base]:
            assert base in graph.bases_of[dep.name] and dep.current.startswith(f"r.io/shop/{base}")
    for name in NAMES:
        assert graph.runtime[name] is None or graph.runtime[name] in graph.bases_of[name]
    reference = graphlib.TopologicalSorter({n: graph.bases_of[n] for n in NAMES})
    try:
        reference.prepare()
    except graphlib.CycleError:
        with pytest.raises(ImageCycleError):
            graph.order()
        return
    order = graph.order()
    assert sorted(order) == sorted(NAMES)
    assert all(order.index(b) < order.index(n) for n in NAMES for b in graph.bases_of[n])


@given(st.text(max_size=140))
def test_a_rebuild_is_to_an_oci_tag_or_refused(tag: str) -> None:
    """Whatever tag the build reports, the FROM written is ``<base>:<tag>`` with an OCI tag, else nothing is."""
    base = CHAIN.image("base-python")
    assert base is not None
    dep = CHAIN.graph(MappingRepo(REPO).read).dependents("base-python")[0]
    try:
        ops = rebuild_ops(REPO[dep.dockerfile], dep, base, tag)
    except (ImageChainError, ValueError):  # not an OCI tag, or not one a FROM line may hold (ImageRef)
        return
    assert [op.new for op in ops] == ([f"{BASE}:{tag}"] if tag != "1.3.0" else [])
    assert "\n" not in tag and " " not in tag
