"""The arrows of docs/architecture.md hold: import-linter's contracts (pyproject.toml) and the
workflow sandbox's rule that workflow code reaches no Temporal client or worker."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept(capsys: pytest.CaptureFixture[str]) -> None:
    cwd = Path.cwd()
    os.chdir(ROOT)  # import-linter reads pyproject.toml from the working directory
    try:
        exit_code = lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True)
    finally:
        os.chdir(cwd)
    report = capsys.readouterr().out
    assert exit_code == 0, report
    assert "Contracts: 6 kept, 0 broken." in report, report


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_workflow_code_reaches_no_temporal_client_or_worker() -> None:
    # import-linter cannot forbid a sub-package of an external package; workflows/ may use
    # temporalio's workflow API, never the client (I/O) or the worker.
    offenders = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in sorted((ROOT / "workflows").rglob("*.py"))
        for name in _imported_modules(path)
        if name.startswith(("temporalio.client", "temporalio.worker", "temporalio.testing"))
    }
    assert not offenders, sorted(offenders)


def test_the_checks_see_a_violation(tmp_path: Path) -> None:
    # The AST walk above finds imports at any depth (inside functions and TYPE_CHECKING blocks).
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from temporalio.client import Client\n    return Client\n")
    assert "temporalio.client.Client" in _imported_modules(probe)
