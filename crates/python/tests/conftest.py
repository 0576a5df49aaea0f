"""Shared fixtures of the Python tests: the repository's models and the `runner` binary they are compared with.

A missing model or binary fails the tests (run `scripts/setup-tests` and `cargo build -p runner` first); nothing is
skipped.
"""

import json
import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
MINILM = ROOT / "models/cache/all-MiniLM-L6-v2"
SMOLLM2 = ROOT / "models/cache/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
RERANKER = ROOT / "tests/fixtures/architectures/bert-reranker"
CORPUS = ROOT / "tests/fixtures/minilm_corpus.txt"


def require(path: pathlib.Path) -> str:
    assert path.exists(), f"{path} is missing: run scripts/setup-tests (models/fetch)"
    return str(path)


@pytest.fixture(scope="session")
def minilm() -> str:
    return require(MINILM)


@pytest.fixture(scope="session")
def smollm2() -> str:
    return require(SMOLLM2)


@pytest.fixture(scope="session")
def reranker_model() -> str:
    return require(RERANKER)


@pytest.fixture(scope="session")
def corpus() -> list:
    require(CORPUS)
    return [line for line in CORPUS.read_text().splitlines() if line.strip()]


def runner_binary() -> str:
    path = pathlib.Path(os.environ.get("QINFER_RUNNER", ROOT / "target/debug/runner"))
    assert path.exists(), f"{path} is missing: build it with `cargo build -p runner` (or set QINFER_RUNNER)"
    return str(path)


def runner(*args: str, stdin: str = "") -> str:
    """What `runner ARGS` prints, failing the test when it fails."""
    done = subprocess.run([runner_binary(), *args], input=stdin, capture_output=True, text=True)
    assert done.returncode == 0, f"runner {' '.join(args)} failed: {done.stderr}"
    return done.stdout


def runner_json_lines(*args: str, stdin: str = "") -> list:
    return [json.loads(line) for line in runner(*args, stdin=stdin).splitlines() if line.strip()]
