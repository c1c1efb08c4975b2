"""The ``fixloop`` command."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fixloop import __version__
from fixloop.models import Source

if TYPE_CHECKING:
    from fixloop.ingest import IngestResult

app = typer.Typer(
    name="fixloop",
    help="fixloop: signal -> work item -> merge request -> human gate -> GitOps deploy -> verification.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.", is_eager=True)] = False,
) -> None:
    if version:
        typer.echo(__version__)
        raise typer.Exit()


def _results(command: str, paths: list[Path], source: Source | None, failed: list[Path]) -> Iterator[IngestResult]:
    """Ingest each path; a file that cannot be read gets one stderr line and is added to ``failed``."""
    from fixloop.config import Settings
    from fixloop.ingest import IngestError, ingest_file

    max_bytes = Settings().ingest_max_bytes
    for path in paths:
        try:
            result = ingest_file(path, source=source, max_bytes=max_bytes)
        except IngestError as e:
            failed.append(path)
            typer.echo(f"fixloop {command}: {e}", err=True)
            continue
        for warning in result.warnings:
            typer.echo(f"fixloop {command}: warning: {warning}", err=True)
        yield result


@app.command()
def ingest(
    paths: Annotated[
        list[Path], typer.Argument(help="Scanner reports or webhook payloads (JSON).", show_default=False)
    ],
    source: Annotated[
        Source | None,
        typer.Option(
            "--source", "-s", help="Parse every file as this source instead of detecting it.", case_sensitive=False
        ),
    ] = None,
) -> None:
    """Print the signals of each file as JSON Lines (one object per signal).

    Problems are reported on stderr, one line per file (``fixloop ingest: <file>: <reason>``); a bad file never
    hides the signals of the good ones. Exit status: 0 when every file was read, 2 when any could not be.
    """
    failed: list[Path] = []
    for result in _results("ingest", paths, source, failed):
        sys.stdout.write("".join(s.to_json() + "\n" for s in result.signals))
    sys.stdout.flush()
    if failed:
        raise typer.Exit(code=2)


class Engine(StrEnum):
    rules = "rules"
    llm = "llm"


@app.command()
def triage(
    paths: Annotated[
        list[Path], typer.Argument(help="Scanner reports or webhook payloads (JSON).", show_default=False)
    ],
    engine: Annotated[Engine, typer.Option("--engine", "-e", help="Triage engine.")] = Engine.rules,
) -> None:
    """Group the signals of the given files into work items; print ``{"work_items": [...], "unassigned": [...]}``.

    Every signal appears exactly once, in one work item or in ``unassigned`` with a reason. Files that cannot be
    read are reported on stderr as by ``ingest`` (exit status 2); the others are still triaged.
    ``--engine llm`` needs FIXLOOP_LLM_BASE_URL, FIXLOOP_LLM_MODEL and OPENAI_API_KEY (exit status 2 before
    reading any file when one is missing); when the endpoint fails, the rules result is printed and a warning
    line says why.
    """
    import asyncio
    import logging

    from fixloop.config import ConfigError, LlmSettings

    llm = None
    if engine is Engine.llm:
        try:
            llm = LlmSettings.load()
        except ConfigError as e:
            typer.echo(f"fixloop triage: {e}", err=True)
            raise typer.Exit(code=2) from None

    from activities.triage import log as triage_log
    from activities.triage import triage as run_triage

    failed: list[Path] = []
    signals = [s for result in _results("triage", paths, None, failed) for s in result.signals]
    warnings = logging.StreamHandler(sys.stderr)  # e.g. the llm engine's fallback to rules, and why
    warnings.setFormatter(logging.Formatter("fixloop triage: warning: %(message)s"))
    triage_log.addHandler(warnings)
    result = asyncio.run(run_triage(signals, engine=engine.value, llm=llm))
    sys.stdout.write(result.model_dump_json(indent=2) + "\n")
    if failed:
        raise typer.Exit(code=2)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
