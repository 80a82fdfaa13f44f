"""The ``referee`` command: serve, score (offline batch), eval, validate, pipelines."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from referee.config import ConfigError, Settings, load_settings

__all__ = ["app", "main"]

app = typer.Typer(
    name="referee",
    help="Reward-as-a-service for RL post-training of language models.",
    no_args_is_help=True,
    add_completion=False,
)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", envvar="REFEREE_CONFIG",
        help="YAML config; without it the embedded default (rule scorers, offline).",
    ),
]  # fmt: skip


def _load(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="Overrides server.host.")] = None,
    port: Annotated[int | None, typer.Option(help="Overrides server.port.")] = None,
    grpc_port: Annotated[
        int | None, typer.Option(help="Overrides server.grpc_port (0: no gRPC).")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Overrides server.workers (HTTP processes).")
    ] = None,
    ray: Annotated[
        bool,
        typer.Option(
            "--ray",
            help="Run on Ray Serve (a deployment per model scorer; RAY_ADDRESS or a "
            "local cluster) instead of one process.",
        ),
    ] = False,
) -> None:
    """Start the HTTP gateway, and the gRPC one when a gRPC port is set (one process, or
    `server.workers` HTTP processes)."""
    settings = _load(config)
    if ray:
        from referee.ray.app import run_blocking

        run_blocking(settings, config, host or settings.server.host, port or settings.server.port)
        return
    overrides = {
        key: value
        for key, value in (("host", host), ("port", port), ("grpc_port", grpc_port))
        if value is not None
    }
    for key, value in overrides.items():
        setattr(settings.server, key, value)
    if workers is not None:
        settings.server.workers = workers
        overrides["workers"] = workers
    if settings.server.workers > 1 and settings.server.grpc_port:
        typer.echo(
            "error: server.workers > 1 serves HTTP only; set server.grpc_port to null "
            "(or run gRPC in a separate `referee serve` with workers: 1)",
            err=True,
        )
        raise typer.Exit(2)
    logging.basicConfig(
        level=settings.server.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    source = config or "the embedded default config"
    typer.echo(f"referee: serving {source} on http://{settings.server.host}:{settings.server.port}"
               + (f" ({settings.server.workers} worker processes)"
                  if settings.server.workers > 1 else ""), err=True)  # fmt: skip
    if settings.server.grpc_port:
        where = f"{settings.server.host}:{settings.server.grpc_port}"
        typer.echo(f"referee: gRPC (referee.v1) on {where}", err=True)
    from referee.http.server import run_http_server

    run_http_server(settings, config, overrides)


@app.command()
def validate(config: Annotated[Path, typer.Argument(help="The YAML config to check.")]) -> None:
    """Check a config file; print every problem with the path of its field."""
    settings = _load(config)
    from referee.engine import RewardEngine

    engine = RewardEngine(settings)
    typer.echo(f"{config}: ok ({len(settings.scorers)} scorers, {len(engine.pipelines)} pipelines)")
    for info in engine.pipelines.values():
        typer.echo(f"  {info.name}  {info.version}  scorers: {', '.join(info.scorers)}")


@app.command()
def pipelines(config: ConfigOption = None) -> None:
    """List the pipelines of a config with their versions and scorers."""
    from referee.engine import RewardEngine

    engine = RewardEngine(_load(config))
    for info in engine.pipelines.values():
        typer.echo(f"{info.name}\t{info.version}\t{','.join(info.scorers)}\t{info.description}")


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, object]]]:
    with path.open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, 1):
            if line.strip():
                try:
                    yield lineno, json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{lineno}: not valid JSON: {exc}") from None


def _done_ids(out: Path) -> set[str]:
    """Ids already scored in OUT. A last line cut short by an interrupted run is removed
    (its item is scored again), so appending never glues two records together."""
    done: set[str] = set()
    if out.exists():
        data = out.read_bytes()
        if data and not data.endswith(b"\n"):
            with out.open("r+b") as handle:
                handle.truncate(data.rfind(b"\n") + 1)
        with out.open(encoding="utf-8") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by an interrupted run: scored again
                if isinstance(record, dict) and isinstance(record.get("id"), str):
                    done.add(record["id"])
    return done


@app.command()
def score(
    input_path: Annotated[Path, typer.Argument(metavar="IN.jsonl", help="One item per line.")],
    pipeline: Annotated[
        str, typer.Option("--pipeline", "-p", help="The pipeline to score with.")
    ] = "default",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Results, one per line (appended). Default: IN.scored.jsonl"
        ),
    ] = None,
    config: ConfigOption = None,
    chunk_size: Annotated[int, typer.Option(min=1, help="Items per engine call.")] = 256,
) -> None:
    """Score a JSONL file offline through the same engine. Resumable: ids already in
    OUT are skipped, so rerunning after an interruption finishes the rest."""
    from referee.engine import RewardEngine
    from referee_client.schema import RewardItem, RewardRequest

    settings = _load(config)
    out = out or input_path.with_suffix(".scored.jsonl")
    done = _done_ids(out)
    todo: list[RewardItem] = []
    seen: dict[str, int] = {}
    try:
        for lineno, record in _read_jsonl(input_path):
            try:
                item = RewardItem.model_validate(record)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                typer.echo(f"error: {input_path}:{lineno}: {where}: {first['msg']}", err=True)
                raise typer.Exit(2) from None
            if item.id in seen:
                typer.echo(
                    f"error: {input_path}:{lineno}: id {item.id!r} already used on line "
                    f"{seen[item.id]}; ids must be unique",
                    err=True,
                )
                raise typer.Exit(2)
            seen[item.id] = lineno
            if item.id not in done:
                todo.append(item)
    except (OSError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    skipped = len(done)
    if not todo:
        typer.echo(f"nothing to do: all items already in {out}", err=True)
        return

    async def run() -> int:
        engine = RewardEngine(settings)
        engine.pipeline(pipeline)
        await engine.start()
        errors = 0
        try:
            with (
                out.open("a", encoding="utf-8") as sink,
                typer.progressbar(
                    length=len(todo), label=f"scoring with {pipeline}", file=sys.stderr
                ) as bar,
            ):
                for start in range(0, len(todo), chunk_size):
                    chunk = todo[start : start + chunk_size]
                    request = RewardRequest(pipeline=pipeline, items=chunk)
                    response = await engine.score(request, enforce_limits=False)
                    for result in response.results:
                        errors += result.error is not None
                        sink.write(result.model_dump_json() + "\n")
                    sink.flush()
                    bar.update(len(chunk))
        finally:
            await engine.close()
        return errors

    from referee.errors import RefereeError

    try:
        errors = asyncio.run(run())
    except RefereeError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    typer.echo(
        f"scored {len(todo)} items ({skipped} already done, {errors} per-item errors) -> {out}",
        err=True,
    )


@app.command("eval")
def eval_(
    input_path: Annotated[
        Path,
        typer.Argument(metavar="IN", help="Preference pairs or best-of-N sets (JSONL or Parquet)."),
    ],
    pipeline: Annotated[
        str, typer.Option("--pipeline", "-p", help="The pipeline to evaluate.")
    ] = "default",
    config: ConfigOption = None,
    url: Annotated[
        str | None, typer.Option(help="Score on a running server instead (http:// or grpc://).")
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="REFEREE_API_KEY", help="API key for --url.")
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the report as JSON.")
    ] = None,
    html_out: Annotated[
        Path | None, typer.Option("--html", help="Write an HTML report with plots.")
    ] = None,
    skip_bad: Annotated[
        bool, typer.Option(help="Count and skip bad lines instead of stopping.")
    ] = False,
    chunk_size: Annotated[int, typer.Option(min=2, help="Items per engine call or request.")] = 256,
    progress: Annotated[bool, typer.Option(help="A progress bar on stderr.")] = True,
) -> None:
    """Measure a pipeline on labelled data: accuracy per subset and component, margins,
    length bias. Prints a Markdown table; --json and --html write the full report."""
    from referee.errors import RefereeError
    from referee.eval import EvalDataError, evaluate_file, markdown_table
    from referee_client.errors import RefereeError as ClientError

    settings = None if url else _load(config)
    try:
        report = evaluate_file(
            input_path, pipeline=pipeline, settings=settings, url=url, api_key=api_key,
            json_out=json_out, html_out=html_out, skip_bad=skip_bad, chunk_items=chunk_size,
            progress=progress,
        )  # fmt: skip
    except EvalDataError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except RefereeError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    except ClientError as exc:
        typer.echo(f"error: {url}: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(markdown_table(report))
    for bad in report["bad_lines"]:  # type: ignore[attr-defined]
        typer.echo(f"skipped {input_path}:{bad['line']}: {bad['message']}", err=True)
    for path in (json_out, html_out):
        if path is not None:
            typer.echo(f"wrote {path}", err=True)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
