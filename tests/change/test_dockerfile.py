"""Dockerfile FROM resolution: ARG defaults, --platform flags, line continuations, stage names, here-documents; the
edit goes where the image is written and changes nothing else."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fixloop.core.change.dockerfile import edit_image, stages
from fixloop.core.change.edit import apply
from fixloop.core.change.ops import BumpBaseImage, PolicyViolation
from fixloop.core.change.policy import unified_diff

ARG_BASE = """\
# syntax=docker/dockerfile:1
ARG BASE=python:3.11.4-slim
ARG WORKDIR=/app

FROM ${BASE} AS build
WORKDIR $WORKDIR
RUN pip wheel --wheel-dir /wheels .

FROM $BASE
COPY --from=build /wheels /wheels
"""


def images(text: str) -> list[str | None]:
    return [s.image for s in stages(text)]


def test_an_arg_default_is_the_image_and_the_edit_goes_there_with_a_note() -> None:
    assert images(ARG_BASE) == ["python:3.11.4-slim", "python:3.11.4-slim"]
    assert [s.tag_arg for s in stages(ARG_BASE)] == ["BASE", "BASE"]
    op = BumpBaseImage(path="Dockerfile", stage=0, current="python:3.11.4-slim", new="python:3.11.9-slim")
    edits, notes = apply([op], {"Dockerfile": ARG_BASE}.get)
    assert unified_diff({"Dockerfile": ARG_BASE}.get, edits) == (
        "--- a/Dockerfile\n+++ b/Dockerfile\n@@ -1,5 +1,5 @@\n # syntax=docker/dockerfile:1\n"
        "-ARG BASE=python:3.11.4-slim\n+ARG BASE=python:3.11.9-slim\n ARG WORKDIR=/app\n \n FROM ${BASE} AS build\n"
    )
    assert images(edits["Dockerfile"]) == ["python:3.11.9-slim", "python:3.11.9-slim"]  # both stages: one ARG
    assert notes == [
        "Dockerfile: the image of stage 0 is the default of ARG BASE, which is what changed; a build that passes "
        "--build-arg BASE=... overrides it and needs the same change"
    ]


def test_a_tag_arg_a_quoted_default_and_an_arg_of_args_are_edited_where_the_characters_are() -> None:
    text = (
        'ARG DEBIAN="10.2"\nARG REGISTRY=docker.io/library\nARG IMAGE=${REGISTRY}/debian:${DEBIAN}\n'
        "FROM debian:${DEBIAN}\nFROM ${IMAGE}\nFROM ${UNSET:-alpine:3.9.4}\n"
    )
    assert images(text) == ["debian:10.2", "docker.io/library/debian:10.2", "alpine:3.9.4"]
    assert [s.tag_arg for s in stages(text)] == ["DEBIAN", "DEBIAN", None]
    split = "ARG R=reg.example/ubi9\nARG T=9\nFROM ${R}:9.1\nFROM ${R}:${T}.1\nFROM ${R}:${T}\n"
    assert [s.tag_arg for s in stages(split)] == [None, None, "T"]  # the tag on the FROM line, in two places, in T
    out, arg = edit_image(text, "Dockerfile", 0, "debian:10.2", "debian:10.13")
    assert (arg, out.splitlines()[0]) == ("DEBIAN", 'ARG DEBIAN="10.13"')
    assert images(out)[:2] == ["debian:10.13", "docker.io/library/debian:10.13"]
    out, arg = edit_image(text, "Dockerfile", 1, "docker.io/library/debian:10.2", "docker.io/library/debian:10.13")
    assert (arg, out.splitlines()[0]) == ("DEBIAN", 'ARG DEBIAN="10.13"')  # the tag is DEBIAN's, not IMAGE's
    out, arg = edit_image(text, "Dockerfile", 2, "alpine:3.9.4", "alpine:3.9.6")
    assert (arg, out.splitlines()[-1]) == (None, "FROM ${UNSET:-alpine:3.9.6}")
    with pytest.raises(PolicyViolation, match="made of several ARGs"):
        edit_image(text, "Dockerfile", 1, "docker.io/library/debian:10.2", "quay.io/debian:10.13")


def test_platform_flags_continuations_and_comments_inside_them_are_kept() -> None:
    text = (
        "FROM --platform=$BUILDPLATFORM \\\n"
        "    # the builder runs natively\n"
        "    golang:1.21.3-alpine \\\n"
        "    AS build\r\n"
        "from --platform=linux/amd64 alpine:3.9.4\n"
    )
    assert [(s.image, s.name, s.line) for s in stages(text)] == [
        ("golang:1.21.3-alpine", "build", 0),
        ("alpine:3.9.4", None, 4),
    ]
    out, _ = edit_image(text, "Dockerfile", 0, "golang:1.21.3-alpine", "golang:1.21.5-alpine")
    assert out == text.replace("1.21.3", "1.21.5")
    out, _ = edit_image(text, "Dockerfile", 1, "alpine:3.9.4", "alpine:3.9.6")
    assert out == text.replace("3.9.4", "3.9.6")


def test_stage_names_copy_from_here_documents_and_late_args_are_not_base_images() -> None:
    text = (
        "FROM debian:10.2 AS Base\n"
        "COPY --from=alpine:3.9.4 /etc/ssl /etc/ssl\n"
        "RUN <<EOF\nFROM alpine:3.9.4\nEOF\n"
        "RUN <<-'SCRIPT' bash\n\tFROM ubuntu:20.04\n\tSCRIPT\n"
        "FROM base AS test\n"
        "ARG LATE=alpine:3.9.4\n"
        "FROM ${LATE}\n"
        "FROM scratch\n"
    )
    found = stages(text)
    assert [(s.image, s.earlier) for s in found] == [
        ("debian:10.2", None),
        (None, "base"),  # the stage named Base (stage names are case-insensitive)
        (None, None),  # an ARG after the first FROM does not reach a FROM
        ("scratch", None),
    ]
    with pytest.raises(PolicyViolation, match="stage 1 is FROM 'base', expected 'debian:10.2'"):
        edit_image(text, "Dockerfile", 1, "debian:10.2", "debian:10.13")


def test_an_image_split_by_a_continuation_or_missing_is_refused() -> None:
    text = "FROM debian:10.\\\n2\n"
    assert images(text) == ["debian:10.2"]
    with pytest.raises(PolicyViolation, match="written across lines"):
        edit_image(text, "Dockerfile", 0, "debian:10.2", "debian:10.13")
    with pytest.raises(PolicyViolation, match="has 1 FROM lines, no stage 3"):
        edit_image(text, "Dockerfile", 3, "debian:10.2", "debian:10.13")


def test_the_escape_directive_changes_the_continuation_character() -> None:
    text = "# escape=`\nFROM mcr.microsoft.com/windows/servercore:ltsc2022 `\n    AS build\nRUN dir c:\\\n"
    assert [(s.image, s.name) for s in stages(text)] == [("mcr.microsoft.com/windows/servercore:ltsc2022", "build")]


FRAGMENTS = st.sampled_from(
    [
        "ARG A=debian:10.2",
        'ARG B="alpine:3.9.4" C=${A}',
        "ARG T=10.2",
        "FROM ${A}",
        "FROM debian:${T} AS x",
        "FROM x",
        "FROM --platform=$P \\",
        "  alpine:3.9.4",
        "FROM $C",
        "RUN <<EOF",
        "EOF",
        "# comment",
        "",
        "COPY --from=x / /",
        "FROM ${B:-ubuntu:20.04}",
        "\\",
    ]
)


@settings(max_examples=300)
@given(st.lists(FRAGMENTS, max_size=12), st.text(max_size=40))
def test_every_resolved_image_is_edited_exactly_or_refused(lines: list[str], noise: str) -> None:
    text = "\n".join(lines) + "\n" + noise
    found = stages(text)
    for stage in found:
        if stage.image is None or ":" not in stage.image:
            continue
        new = stage.image + "9"
        try:
            out, _ = edit_image(text, "Dockerfile", stage.index, stage.image, new)
        except PolicyViolation:
            continue
        assert images(out)[stage.index] == new
        assert len(out) == len(text) + 1  # one character added, where the tag is written


@given(st.text(max_size=300))
def test_stages_never_raise(text: str) -> None:
    for stage in stages(text):
        assert stage.image is None or len(stage.image) <= 512
