"""The compiled operators' build (models/kernels.py): kept under its key and found again, and without a compiler
``speed.compiled_kernels=auto`` trains on the Python operators while ``true`` stops with what to do."""

import json
import os
import shutil

import pytest

from seq2seq.models import kernels
from tests.conftest import TINY, run_module

pytestmark = pytest.mark.skipif(
    shutil.which(os.environ.get("CXX") or "c++") is None,
    reason="no C++ compiler: speed.compiled_kernels=auto falls back",
)


@pytest.fixture
def fresh_load(monkeypatch, tmp_path):
    """load() forgets its cached result, builds into an empty cache; afterwards the usual one is found again."""
    monkeypatch.setenv("SEQ2SEQ_KERNEL_CACHE", str(tmp_path / "kernels"))
    kernels.load.cache_clear()
    yield tmp_path / "kernels"
    kernels.load.cache_clear()


def test_a_build_is_kept_under_its_key_and_found_again(fresh_load):
    library = kernels.load()
    assert library.startswith(str(fresh_load)) and os.path.getsize(library) > 0
    built = os.path.getmtime(library)
    kernels.load.cache_clear()
    assert kernels.load() == library and os.path.getmtime(library) == built  # not built again
    assert [p.name for p in fresh_load.glob("*/*.tmp")] == []  # no partial file left


def test_without_a_compiler_auto_falls_back_and_true_says_what_to_do(fresh_load, monkeypatch, caplog):
    monkeypatch.setenv("CXX", "no-such-compiler")
    assert kernels.wanted(False) is False and kernels.wanted("false") is False
    with caplog.at_level("INFO", logger=kernels.__name__):
        assert kernels.wanted("auto") is False
    assert "no C++ compiler 'no-such-compiler'" in caplog.text
    with pytest.raises(kernels.KernelUnavailable, match=r"speed.compiled_kernels=true: no C\+\+ compiler"):
        kernels.wanted(True)


def test_a_failing_compiler_reports_its_error(fresh_load, monkeypatch):
    monkeypatch.setenv("CXX", "false")  # exists, exits 1
    with pytest.raises(kernels.KernelUnavailable, match=r"false failed \(1\)"):
        kernels.load()
    assert list(fresh_load.glob("*/*.so")) == []


@pytest.mark.parametrize("setting", ["true", "auto"])
def test_the_command_line_without_a_compiler(tmp_path, setting):
    """A user's machine without g++: auto trains (on the Python operators), true stops before training with the
    option and the remedy, no traceback."""
    run_dir = tmp_path / "run"
    result = run_module(
        "seq2seq.train",
        *TINY,
        f"speed.compiled_kernels={setting}",
        f"hydra.run.dir={run_dir}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        cwd=tmp_path,
        extra_env={"CXX": "no-such-compiler", "SEQ2SEQ_KERNEL_CACHE": str(tmp_path / "kernels")},
        text=True,
    )
    output = result.stdout + result.stderr
    results = json.loads((run_dir / "results.json").read_text())
    if setting == "auto":
        assert result.returncode == 0, output[-2000:]
        assert results["status"] == "completed" and "test/bleu" in results["metrics"]
    else:
        assert result.returncode == 1
        assert "speed.compiled_kernels=true: no C++ compiler 'no-such-compiler'" in output
        assert "speed.compiled_kernels=auto" in output and "Traceback" not in output
        assert results["status"] == "failed" and not (run_dir / "checkpoints").exists()
    assert not (tmp_path / "kernels").exists() or not list((tmp_path / "kernels").glob("*/*.so"))


def test_a_run_trained_with_them_evaluates_where_there_is_no_compiler(tmp_path, monkeypatch):
    """speed.compiled_kernels=true is training's: evaluation (decoding only) neither builds nor needs them."""
    from seq2seq.evaluate import evaluate
    from seq2seq.train import train
    from tests.conftest import compose_train
    from tests.test_evaluate import compose_evaluate

    assert train(compose_train(tmp_path / "t", *TINY, "speed.compiled_kernels=true"))["status"] == "completed"
    monkeypatch.setenv("CXX", "no-such-compiler")
    monkeypatch.setenv("SEQ2SEQ_KERNEL_CACHE", str(tmp_path / "kernels"))
    kernels.load.cache_clear()
    try:
        results = evaluate(compose_evaluate(tmp_path / "eval", f"run_dir={tmp_path / 't' / 'run'}"))
    finally:
        kernels.load.cache_clear()
    assert results["status"] == "completed" and "test/bleu" in results["metrics"]
    assert not (tmp_path / "kernels").exists()
