"""The ``referee`` command: serve, score (offline batch), eval, validate, pipelines."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError

from referee.config import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from types import FrameType

    import uvicorn

    from referee.engine import RewardEngine

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
    ray: Annotated[
        bool,
        typer.Option(
            "--ray",
            help="Run on Ray Serve (a deployment per model scorer; RAY_ADDRESS or a "
            "local cluster) instead of one process.",
        ),
    ] = False,
) -> None:
    """Start the HTTP gateway, and the gRPC one when a gRPC port is set (one process)."""
    import uvicorn

    from referee.http import build_app

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
    logging.basicConfig(
        level=settings.server.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    source = config or "the embedded default config"
    typer.echo(f"referee: serving {source} on http://{settings.server.host}:{settings.server.port}",
               err=True)  # fmt: skip
    if settings.server.grpc_port:
        where = f"{settings.server.host}:{settings.server.grpc_port}"
        typer.echo(f"referee: gRPC (referee.v1) on {where}", err=True)
    app_ = build_app(settings, config_path=config, server_overrides=overrides)
    grace = settings.server.shutdown_grace_s
    server_config = uvicorn.Config(
        app_,
        host=settings.server.host,
        port=settings.server.port,
        log_level=settings.server.log_level,
        # requests in flight are answered (503) by the engine at `grace`; uvicorn's own
        # cut-off comes a little later so it never has to cancel one mid-response
        timeout_graceful_shutdown=int(grace) + 3,
    )
    _run_server(server_config, app_.state.engine, grace)


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


def _run_server(config: uvicorn.Config, engine: RewardEngine, grace_s: float) -> None:
    """uvicorn's Server, telling the engine when a shutdown signal arrives so readiness
    turns 503 at once and requests in flight are answered before the process exits."""
    import uvicorn

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            engine.begin_shutdown(grace_s)
            super().handle_exit(sig, frame)

    DrainingServer(config).run()


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
    pipeline: Annotated[str, typer.Option("--pipeline", "-p")] = "default",
    config: ConfigOption = None,
    url: Annotated[
        str | None, typer.Option(help="Score on a running server instead (http:// or grpc://).")
    ] = None,
    api_key: Annotated[str | None, typer.Option(envvar="REFEREE_API_KEY")] = None,
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
