"""The language table: how to compile and run a program of each language in the sandbox.

A language is a config entry (``languages:`` in the code scorer's options adds or
replaces one): the source file name, an optional compile command (run in the sandbox with
the work directory writable; it must leave ``artifact``), the run command, the names a
fenced code block may carry, and a version command whose output enters the scorer's
fingerprint (a toolchain upgrade changes cached rewards). Commands are argv lists run
with ``/work`` as the current directory.
"""

from __future__ import annotations

import subprocess

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["BUILTIN_LANGUAGES", "Language", "toolchain_version"]

_SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"  # sandbox.RUN_ENV["PATH"]


class Language(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="file name of the program")
    compile: tuple[str, ...] | None = Field(
        default=None, description="compile argv (None: interpreted)"
    )
    artifact: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="the file the compile step leaves (mounted read-only for the runs)",
    )
    run: tuple[str, ...] = Field(min_length=1, description="run argv")
    fence_tags: tuple[str, ...] = Field(default=(), description="code fence names (```cpp)")
    version: tuple[str, ...] = Field(default=(), description="argv printing the version")
    sandbox_fusion: str | None = Field(
        default=None, description="the language's name in SandboxFusion's run_code API"
    )


BUILTIN_LANGUAGES: dict[str, Language] = {
    "python": Language(
        source="main.py",
        run=("python3", "-I", "main.py"),
        fence_tags=("python", "python3", "py"),
        version=("python3", "--version"),
        sandbox_fusion="python",
    ),
    "cpp": Language(
        source="main.cpp",
        compile=("g++", "-std=gnu++17", "-O2", "-pipe", "-o", "main", "main.cpp"),
        artifact="main",
        run=("./main",),
        fence_tags=("cpp", "c++", "cxx", "cc"),
        version=("g++", "--version"),
        sandbox_fusion="cpp",
    ),
}


def toolchain_version(language: Language) -> str:
    """The first line the version command prints on this host ("" when there is none)."""
    if not language.version:
        return ""
    try:
        # The sandbox's PATH, so the version is that of the toolchain the runs use.
        done = subprocess.run(
            list(language.version), capture_output=True, text=True, timeout=30, check=False,
            env={"PATH": _SANDBOX_PATH, "LANG": "C.UTF-8"},
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable: {type(exc).__name__}"
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if text else ""
