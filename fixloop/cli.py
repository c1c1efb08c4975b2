"""The ``fixloop`` command."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from fixloop import __version__
from fixloop.models import Source

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


@app.command()
def ingest(
    paths: Annotated[
        list[Path], typer.Argument(help="Scanner reports or webhook payloads (JSON).", show_default=False)
    ],
    source: Annotated[
        Source | None,  # noqa: UP007 - typer needs Optional here
        typer.Option(
            "--source", "-s", help="Parse every file as this source instead of detecting it.", case_sensitive=False
        ),
    ] = None,
) -> None:
    """Print the signals of each file as JSON Lines (one object per signal).

    Problems are reported on stderr, one line per file (``fixloop ingest: <file>: <reason>``); a bad file never
    hides the signals of the good ones. Exit status: 0 when every file was read, 2 when any could not be.
    """
    from fixloop.config import Settings
    from fixloop.ingest import IngestError, ingest_file

    max_bytes = Settings().ingest_max_bytes
    out = sys.stdout
    failed = 0
    for path in paths:
        try:
            result = ingest_file(path, source=source, max_bytes=max_bytes)
        except IngestError as e:
            failed += 1
            typer.echo(f"fixloop ingest: {e}", err=True)
            continue
        out.write("".join(s.to_json() + "\n" for s in result.signals))
        for warning in result.warnings:
            typer.echo(f"fixloop ingest: warning: {warning}", err=True)
    out.flush()
    if failed:
        raise typer.Exit(code=2)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
