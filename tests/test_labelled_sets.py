"""The labelled evaluation sets stay well-formed: every fact a right answer must contain is in the
article section it names, ids are unique, labels are in the vocabulary of each set."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "bench" / "data"


@pytest.mark.parametrize("script", ["validate_guardrails.py", "validate_answers_retrieval.py"])
def test_labelled_set_validates(script: str) -> None:
    done = subprocess.run(
        [sys.executable, str(DATA / script)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
