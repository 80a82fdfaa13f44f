"""The HTTP API reference (from the server's OpenAPI document), the gRPC reference (from
the proto and its comments) and the CLI reference (from the typer app). Used by
scripts/gen_docs.py."""

from __future__ import annotations

import json
import re
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from scripts._docgen_config import HEADER, cell

__all__ = [
    "CLI_COLUMNS",
    "CLI_ENV",
    "cli_help",
    "cli_reference",
    "grpc_reference",
    "http_reference",
    "plain_help",
]

ROOT = Path(__file__).resolve().parents[1]
PROTO = "referee/v1/referee.proto"
CLI_COLUMNS = 100  # the terminal width the CLI reference is rendered at
# how the help is rendered for the reference and by the test that runs the console script
CLI_ENV = {"COLUMNS": str(CLI_COLUMNS), "TERMINAL_WIDTH": str(CLI_COLUMNS), "NO_COLOR": "1",
           "TERM": "dumb", "_TYPER_FORCE_DISABLE_TERMINAL": "1"}  # fmt: skip


# -- HTTP ---------------------------------------------------------------------------------
def openapi_document() -> dict[str, Any]:
    from referee.config import load_settings
    from referee.http import build_app

    return build_app(load_settings(environ={})).openapi()


def schema_type(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{name.lower()})"
    if "anyOf" in schema:
        return " or ".join(schema_type(s) for s in schema["anyOf"])
    if "enum" in schema:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in schema["enum"])
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    kind = schema.get("type", "any")
    if kind == "array":
        return f"list of {schema_type(schema.get('items', {}))}"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"map of string to {schema_type(schema['additionalProperties'])}"
    return str(kind)


def _bounds(schema: dict[str, Any]) -> str:
    marks = {"minimum": "≥", "exclusiveMinimum": ">", "maximum": "≤", "exclusiveMaximum": "<",
             "minLength": "length ≥", "maxLength": "length ≤", "minItems": "items ≥",
             "maxItems": "items ≤"}  # fmt: skip
    found = [f"{mark} {schema[key]}" for key, mark in marks.items() if key in schema]
    return f" ({', '.join(found)})" if found else ""


def http_reference() -> str:
    doc = openapi_document()
    out = [HEADER.format(source="the OpenAPI document of build_app() on the embedded "
                         "default config")]  # fmt: skip
    out.append(
        f"# HTTP API reference\n\n{doc['info']['title']} {doc['info']['version']}. A running "
        "server serves the same document at `/openapi.json` and renders it at `/docs`. "
        "`GET /metrics` (Prometheus text) is not part of the document; see the "
        "[metrics reference](metrics.md).\n\n## Routes\n\n"
    )
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            out.append(f"### `{method.upper()} {path}`\n\n")
            text = op.get("description") or op.get("summary") or ""
            if text:
                out.append(" ".join(text.split()) + "\n\n")
            params = op.get("parameters", [])
            if params:
                out.append("| parameter | in | type | required | description |\n"
                           "| --- | --- | --- | --- | --- |\n")  # fmt: skip
                for p in params:
                    kind = schema_type(p.get("schema", {}))
                    desc = cell(p.get("description") or p.get("schema", {}).get("description", ""))
                    req = "yes" if p.get("required") else "no"
                    out.append(f"| `{p['name']}` | {p['in']} | {kind} | {req} | {desc} |\n")
                out.append("\n")
            body = op.get("requestBody")
            if body:
                schema = body["content"]["application/json"]["schema"]
                out.append(f"Request body (JSON): {schema_type(schema)}\n\n")
            out.append("| status | meaning | body |\n| --- | --- | --- |\n")
            for status, resp in op.get("responses", {}).items():
                content = resp.get("content", {}).get("application/json", {})
                kind = schema_type(content["schema"]) if content.get("schema") else ""
                out.append(f"| {status} | {cell(resp.get('description', ''))} | {kind} |\n")
            out.append("\n")
    out.append("## Schemas\n\n")
    for name, schema in sorted(doc["components"]["schemas"].items()):
        out.append(f"### {name}\n\n")
        if schema.get("description"):
            out.append(" ".join(schema["description"].split()) + "\n\n")
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        if props:
            out.append("| field | type | required | default | description |\n"
                       "| --- | --- | --- | --- | --- |\n")  # fmt: skip
            for field, prop in props.items():
                default = f"`{json.dumps(prop['default'])}`" if "default" in prop else ""
                req = "yes" if field in required else "no"
                kind = schema_type(prop) + _bounds(prop)
                desc = cell(prop.get("description", ""))
                out.append(f"| `{field}` | {kind} | {req} | {default} | {desc} |\n")
            out.append("\n")
    return "".join(out).rstrip() + "\n"


# -- gRPC ---------------------------------------------------------------------------------
def _descriptor_set() -> Any:
    from google.protobuf import descriptor_pb2
    from grpc_tools import protoc

    include = str(resources.files("grpc_tools") / "_proto")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        args = [f"-I{ROOT / 'proto'}", f"-I{include}", "--include_source_info"]
        code = protoc.main(["protoc", *args, f"--descriptor_set_out={out}", PROTO])
        if code != 0:
            raise RuntimeError(f"protoc failed on {PROTO} (exit {code})")
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def _comment(location: Any) -> str:
    text = " ".join([location.leading_comments, location.trailing_comments])
    return " ".join(text.split())


_SCALARS = {1: "double", 2: "float", 3: "int64", 4: "uint64", 5: "int32", 8: "bool",
            9: "string", 12: "bytes", 13: "uint32"}  # fmt: skip


def _message_link(type_name: str, package: str, streaming: bool) -> str:
    name = type_name.removeprefix(f".{package}.")
    return ("stream " if streaming else "") + f"[{name}](#{name.lower()})"


def grpc_reference() -> str:
    file = _descriptor_set().file[0]
    comments = {tuple(loc.path): _comment(loc) for loc in file.source_code_info.location}
    package = file.package
    maps = {
        f".{package}.{m.name}.{n.name}": n
        for m in file.message_type
        for n in m.nested_type
        if n.options.map_entry
    }

    def type_of(field: Any) -> str:
        if field.type_name in maps:
            key, value = maps[field.type_name].field
            return f"map from {type_of(key)} to {type_of(value)}"
        if field.type_name:
            name = field.type_name.removeprefix(f".{package}.")
            if name.startswith("."):
                return f"`{name[1:]}`"
            return f"[{name}](#{name.lower()})"
        return _SCALARS.get(field.type, str(field.type))

    out = [HEADER.format(source=f"proto/{PROTO}")]
    out.append(
        f"# gRPC API reference\n\nPackage `{package}`, from `proto/{PROTO}`. The messages "
        "mirror the HTTP wire schema field for field. The server also implements the "
        "standard `grpc.health.v1.Health` service and server reflection.\n\n"
    )
    for s, service in enumerate(file.service):
        out.append(f"## Service `{package}.{service.name}`\n\n")
        out.append("| method | request | response | description |\n| --- | --- | --- | --- |\n")
        for m, method in enumerate(service.method):
            req_s = _message_link(method.input_type, package, method.client_streaming)
            resp_s = _message_link(method.output_type, package, method.server_streaming)
            desc = cell(comments.get((6, s, 2, m), ""))
            out.append(f"| `{method.name}` | {req_s} | {resp_s} | {desc} |\n")
        out.append("\n")
    out.append("## Messages\n\n")
    for i, message in enumerate(file.message_type):
        out.append(f"### {message.name}\n\n")
        if comments.get((4, i)):
            out.append(comments[(4, i)] + "\n\n")
        if not message.field:
            out.append("No fields.\n\n")
            continue
        out.append("| field | number | type | description |\n| --- | --- | --- | --- |\n")
        for j, field in enumerate(message.field):
            kind = type_of(field)
            if field.label == 3 and field.type_name not in maps:
                kind = f"repeated {kind}"
            elif field.proto3_optional:
                kind = f"optional {kind}"
            desc = cell(comments.get((4, i, 2, j), ""))
            out.append(f"| `{field.name}` | {field.number} | {kind} | {desc} |\n")
        out.append("\n")
    return "".join(out).rstrip() + "\n"


# -- CLI ----------------------------------------------------------------------------------
def cli_help(*args: str) -> str:
    """`referee ARGS --help` as a user sees it at CLI_COLUMNS columns, lines right-stripped."""
    from typer.testing import CliRunner

    from referee.cli import app

    result = CliRunner(env=CLI_ENV).invoke(app, [*args, "--help"], prog_name="referee")
    if result.exit_code != 0:
        raise RuntimeError(f"referee {' '.join(args)} --help failed: {result.output}")
    return plain_help(result.output)


def plain_help(output: str) -> str:
    """Help text without terminal styling (rich adds it where a CI forces a terminal) and
    without trailing spaces."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", output)
    return "\n".join(line.rstrip() for line in text.splitlines()).strip("\n") + "\n"


def cli_commands() -> list[str]:
    import typer

    from referee.cli import app

    group = typer.main.get_command(app)
    return sorted(getattr(group, "commands", {}))


def cli_reference() -> str:
    out = [HEADER.format(source="the typer app in service/referee/cli.py")]
    out.append(
        "# CLI reference\n\nThe `referee` command (installed with the `server` extra). "
        f"Each block is the command's `--help` at {CLI_COLUMNS} columns; "
        "tests/e2e/test_cli_help.py runs the installed console script and compares.\n\n"
    )
    out.append(f"## `referee`\n\n```text\n{cli_help()}```\n\n")
    for name in cli_commands():
        out.append(f"## `referee {name}`\n\n```text\n{cli_help(name)}```\n\n")
    return "".join(out).rstrip() + "\n"
