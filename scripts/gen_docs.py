"""Generate the reference pages under docs/reference/ from the code.

    python scripts/gen_docs.py          # write them
    python scripts/gen_docs.py --check  # exit 1 when a committed page is stale

Sources: the pydantic settings, scorer options and pipeline nodes (configuration), the
server's OpenAPI document on the embedded default config (HTTP API), the proto with its
comments (gRPC API), the metrics module (metrics) and the typer app (CLI).
tests/unit/test_docs_reference.py regenerates them in memory and compares.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT / "service", ROOT / "clients", ROOT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from scripts._docgen_api import cli_reference, grpc_reference, http_reference  # noqa: E402
from scripts._docgen_config import config_reference, metrics_reference  # noqa: E402

__all__ = ["GENERATORS", "generate", "main", "stale_pages"]

REFERENCE = Path("docs/reference")

GENERATORS: dict[str, Callable[[], str]] = {
    "config.md": config_reference,
    "http.md": http_reference,
    "grpc.md": grpc_reference,
    "metrics.md": metrics_reference,
    "cli.md": cli_reference,
}


def generate() -> dict[Path, str]:
    """Every generated page: its path relative to the repository root -> its text."""
    return {REFERENCE / name: make() for name, make in GENERATORS.items()}


def stale_pages(root: Path = ROOT) -> list[Path]:
    """Pages whose committed text differs from a fresh generation (or that are missing)."""
    stale = []
    for rel, text in generate().items():
        file = root / rel
        if not file.exists() or file.read_text(encoding="utf-8") != text:
            stale.append(rel)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a page is stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_pages()
        for rel in stale:
            print(f"stale: {rel} (run: python scripts/gen_docs.py)", file=sys.stderr)
        return 1 if stale else 0
    for rel, text in generate().items():
        (ROOT / rel).parent.mkdir(parents=True, exist_ok=True)
        (ROOT / rel).write_text(text, encoding="utf-8")
        print(f"wrote {rel}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
