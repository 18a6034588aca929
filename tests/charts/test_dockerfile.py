"""Static checks of the production Dockerfile and .dockerignore (no Docker engine runs here).

hadolint is not packaged by Debian, so these parse the Dockerfile themselves: stages, the final
stage's user, packages, entrypoint and environment. Building and running the image is left to CI
with a Docker engine.
"""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPILERS = ("build-essential", "gcc", "g++", "clang", "make", "cmake", "cargo", "rustc", "libc6-dev")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with line continuations joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", args.strip(), re.IGNORECASE)
            assert match, line
            base = re.sub(
                r"\$\{(\w+)\}|\$(\w+)", lambda m: global_args.get(m.group(1) or m.group(2), m.group(0)), match.group(1)
            )
            stages.append(Stage(base=base, name=match.group(2)))
        elif not stages:
            if keyword == "ARG":
                name, _, default = args.partition("=")
                global_args[name.strip()] = default.strip()
        else:
            stages[-1].instructions.append((keyword, args.strip()))
    return global_args, stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())[1]


def test_multi_stage_build_from_python_311_slim(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    builder, final = stages[0], stages[-1]
    assert builder.name == "builder"
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?(@sha256:[0-9a-f]{64})?", final.base), final.base
    assert builder.base == final.base, "the venv's interpreter links need the same base in both stages"


def test_final_stage_runs_as_numeric_non_root_user(stages: list[Stage]) -> None:
    users = stages[-1].all("USER")
    assert users, "the final stage must set USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, users[-1]
    assert not gid or (gid.isdigit() and int(gid) != 0), users[-1]
    # The user exists in /etc/passwd too (some tools look the UID up).
    assert any(f"--uid {uid}" in run for run in stages[-1].all("RUN"))


def test_final_stage_copies_only_the_venv_and_installs_no_compilers(stages: list[Stage]) -> None:
    final = stages[-1]
    copies = final.all("COPY")
    assert copies == ["--from=builder /opt/venv /opt/venv"], copies
    for run in final.all("RUN"):
        assert "apt-get install" not in run and "pip install" not in run, run
        for compiler in COMPILERS:
            assert not re.search(rf"(^|\s){re.escape(compiler)}(\s|$)", run), f"{compiler} in the final stage: {run}"
    # Compilers, if any, stay in the builder.
    assert any("build-essential" in run for run in stages[0].all("RUN"))


def test_entrypoint_is_the_cli_and_the_gateway_is_the_default(stages: list[Stage]) -> None:
    final = stages[-1]
    assert json.loads(final.all("ENTRYPOINT")[-1]) == ["crm-fte"]
    assert json.loads(final.all("CMD")[-1]) == ["gateway"]


def test_no_healthcheck_kubernetes_probes_instead() -> None:
    _, stages = parse_dockerfile(DOCKERFILE.read_text())
    assert not [s for s in stages if s.all("HEALTHCHECK")]


def test_runtime_environment_suits_a_read_only_root_filesystem(stages: list[Stage]) -> None:
    env = " ".join(stages[-1].all("ENV"))
    for setting in ("PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1", "HOME=/tmp", "PATH=/opt/venv/bin:"):
        assert setting in env, setting


def test_production_image_leaves_out_the_embedded_extra(stages: list[Stage]) -> None:
    instructions = " ".join(args for s in stages for _, args in s.instructions)
    assert "embedded" not in instructions, "the [embedded] extra is for `crm-fte up` only"
    installs = [r for r in stages[0].all("RUN") if "pip install" in r]
    assert any("requirements.txt" in r and "['dependencies']" in r for r in installs), (
        "deps come from [project].dependencies"
    )
    assert any("pip wheel --no-deps" in r for r in installs), "the project is built as a wheel"


def _ignored(path: str, patterns: list[str]) -> bool:
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        bare = pattern.lstrip("!").rstrip("/")
        candidates = [bare, bare.removeprefix("**/")]
        if any(fnmatch.fnmatch(path, c) or path.startswith(c + "/") for c in candidates):
            excluded = not negate
    return excluded


def test_dockerignore_keeps_secrets_out_and_the_packages_in() -> None:
    patterns = [p.strip() for p in DOCKERIGNORE.read_text().splitlines() if p.strip() and not p.startswith("#")]
    for path in (
        ".git",
        ".venv",
        ".env",
        ".env.production",
        "tests/charts/test_chart.py",
        "charts/crm-digital-fte/values.yaml",
        "bench/results/x.json",
        "core/__pycache__/settings.cpython-311.pyc",
    ):
        assert _ignored(path, patterns), f"{path} should not be in the build context"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = [p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]]
    for path in ["pyproject.toml", "README.md", *[f"{p}/__init__.py" for p in packages]]:
        assert not _ignored(path, patterns), f"{path} is needed to build the wheel"
