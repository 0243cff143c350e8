"""Tests for seq2seq.dashboard: the sweep dashboard built from fake results.json files."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image as mpimg
from matplotlib.figure import Figure
from rich.console import Console

from seq2seq.dashboard.build import build_dashboard
from seq2seq.dashboard.cli import main, maybe_wandb_report
from seq2seq.dashboard.runs import (
    bleu_by_length_series,
    hidden_size_series,
    load_runs,
    read_metric_curves,
    variant_labels,
)
from seq2seq.evaluation import tracking

BUCKETS = [("1-10", 1, 10), ("11-20", 11, 20), ("21-30", 21, 30), ("31-40", 31, 40)]


def write_job(
    sweep: Path,
    job: str,
    attention: str,
    hidden: int,
    bleus: list[float | None],
    encoder: str = "gru",
    position_accuracy: list[float] | None = None,
) -> Path:
    """A completed job; a None in `bleus` is an empty bucket (n=0, null scores)."""
    job_dir = sweep / job
    job_dir.mkdir(parents=True)
    buckets = [
        {"bucket": name, "min_len": lo, "max_len": hi, "n": 0 if b is None else 10, "bleu": b,
         "chrf": None if b is None else b + 5, "exact_match": None if b is None else 0.1}
        for (name, lo, hi), b in zip(BUCKETS, bleus, strict=True)
    ]  # fmt: skip
    results = {
        "schema": 1,
        "status": "completed",
        "error": None,
        "choices": {"data": "toy_translation", "model/encoder": encoder, "model/attention": attention,
                    "teacher_forcing": "constant", "decoding": "greedy"},
        "config": {"model": {"hidden_size": hidden, "embedding_size": 32}, "logger": {"project": "p"}},
        "params": 1000 * hidden,
        "metrics": {"test/bleu": float(np.nanmean([b for b in bleus if b is not None])),
                    "test/chrf": 50.0, "test/exact_match": 0.25, "test/loss": 1.0, "val/bleu": 30.0},
        "bleu_by_length": buckets,
        "train": {"steps": 100, "epochs": 2, "wall_s": 12.5, "tokens_per_s": 4321.0},
    }  # fmt: skip
    if position_accuracy is not None:
        results["position_accuracy"] = position_accuracy
    (job_dir / "results.json").write_text(json.dumps(results))
    return job_dir


def write_failed_job(sweep: Path, job: str, error: str) -> Path:
    job_dir = sweep / job
    job_dir.mkdir(parents=True)
    results = {"schema": 1, "status": "failed", "error": error,
               "choices": {"model/encoder": "lstm", "model/attention": "luong_dot"},
               "config": {"model": {"hidden_size": 64}}, "params": None}  # fmt: skip
    (job_dir / "results.json").write_text(json.dumps(results))
    return job_dir


def write_heatmap(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(2, 2))
    fig.add_subplot().imshow(np.random.default_rng(0).random((5, 6)))
    fig.savefig(path)


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """Four completed jobs (2 attentions x hidden 64/128, job order shuffled), one failure, one metrics.csv."""
    sweep = tmp_path / "multirun" / "2024-01-01" / "12-00-00"
    write_job(sweep, "0", "bahdanau", 128, [40.0, 38.0, None, 30.0], position_accuracy=[0.9, 0.8, 0.6])
    write_job(sweep, "1", "none", 128, [35.0, 20.0, None, 5.0])
    job = write_job(sweep, "2", "bahdanau", 64, [30.0, 28.0, 25.0, None])
    write_job(sweep, "10", "none", 64, [25.0, 12.0, 4.0, None])
    write_failed_job(sweep, "3", "RuntimeError: CUDA out of memory <in decoder> [rank 0]")
    (job / "csv" / "version_0").mkdir(parents=True)
    (job / "csv" / "version_0" / "metrics.csv").write_text(
        "epoch,step,train/loss,train/teacher_forcing_ratio,val/bleu,val/loss\n"
        "0,9,3.5,1.0,,\n0,19,3.0,1.0,,\n0,19,,,12.5,2.9\n1,29,2.5,0.9,,\n1,39,2.0,0.9,,\n1,39,,,20.0,2.1\n"
    )
    write_heatmap(job / "plots" / "attention" / "example_0.png")
    write_heatmap(job / "plots" / "attention" / "example_1.png")
    return sweep


def assert_nontrivial_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 5000, path
    pixels = mpimg.imread(path)
    colours = np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)
    assert len(colours) > 20, f"{path} has only {len(colours)} colours"


def test_dashboard_shows_every_job_and_the_failure(sweep: Path) -> None:
    index = build_dashboard(sweep)
    assert index == sweep / "dashboard" / "index.html"
    page = index.read_text()
    for job in ("0", "1", "2", "10", "3"):
        assert '<tr class="job status-' in page and f'<td class="" data-sort="{job}">{job}</td>' in page
    assert page.count('<tr class="job ') == 5
    assert page.count('class="job status-failed"') == 1
    assert "RuntimeError: CUDA out of memory &lt;in decoder&gt; [rank 0]" in page  # the error, escaped
    assert "<script src" not in page and "http" not in page.split("<body")[1]  # no network needed
    assert page.count('src="data:image/png;base64,') == 4 + 2  # 4 figures + 2 heatmaps
    for name in ("bleu_by_length", "bleu_vs_hidden", "training_curves", "position_accuracy"):
        assert_nontrivial_png(index.parent / f"{name}.png")


def test_dashboard_skips_figures_without_data(tmp_path: Path) -> None:
    write_job(tmp_path / "s", "0", "bahdanau", 128, [40.0, None, None, None])
    write_job(tmp_path / "s", "1", "none", 128, [30.0, None, None, None])
    index = build_dashboard(tmp_path / "s", tmp_path / "out")
    assert index == tmp_path / "out" / "index.html"
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["bleu_by_length.png"]
    assert "Attention heatmaps" not in index.read_text()


def test_bleu_by_length_series_leaves_empty_buckets_as_gaps(sweep: Path) -> None:
    buckets, series = bleu_by_length_series(load_runs(sweep))
    assert buckets == ["1-10", "11-20", "21-30", "31-40"]  # by length, not alphabetically
    assert series["gru + bahdanau, h=128"] == [40.0, 38.0, None, 30.0]
    assert series["gru + none, h=64"] == [25.0, 12.0, 4.0, None]
    assert len(series) == 4  # the failed job has no line


def test_bleu_by_length_series_orders_buckets_by_length(tmp_path: Path) -> None:
    job = write_job(tmp_path, "0", "bahdanau", 128, [40.0, 38.0, 33.0, 30.0])
    results = json.loads((job / "results.json").read_text())
    results["bleu_by_length"].reverse()
    (job / "results.json").write_text(json.dumps(results))
    buckets, series = bleu_by_length_series(load_runs(tmp_path))
    assert buckets == ["1-10", "11-20", "21-30", "31-40"]
    assert series["gru + bahdanau, h=128"] == [40.0, 38.0, 33.0, 30.0]


def test_hidden_size_series_sorted_by_hidden_size(tmp_path: Path) -> None:
    for job, hidden, bleu in [("0", 256, 30.0), ("1", 64, 10.0), ("2", 128, 20.0), ("3", 64, 14.0)]:
        write_job(tmp_path, job, "bahdanau", hidden, [bleu, None, None, None])
    write_job(tmp_path, "4", "none", 512, [5.0, None, None, None])
    write_job(tmp_path, "5", "none", 32, [3.0, None, None, None])
    series = hidden_size_series(load_runs(tmp_path))
    assert series == {
        "gru + bahdanau": [(64, 12.0), (128, 20.0), (256, 30.0)],  # jobs 1 and 3 averaged
        "gru + none": [(32, 3.0), (512, 5.0)],
    }


def test_hidden_size_series_empty_with_one_hidden_size(tmp_path: Path) -> None:
    write_job(tmp_path, "0", "bahdanau", 128, [40.0, None, None, None])
    write_job(tmp_path, "1", "none", 128, [30.0, None, None, None])
    assert hidden_size_series(load_runs(tmp_path)) == {}


def test_variant_labels_add_only_what_differs(tmp_path: Path) -> None:
    write_job(tmp_path, "0", "bahdanau", 128, [40.0, None, None, None])
    write_job(tmp_path, "1", "bahdanau", 128, [41.0, None, None, None])
    write_job(tmp_path, "2", "none", 128, [30.0, None, None, None], encoder="lstm")
    assert variant_labels(load_runs(tmp_path)) == {
        "0": "gru + bahdanau, h=128 [0]",  # same set-up twice (e.g. seeds): the job tells them apart
        "1": "gru + bahdanau, h=128 [1]",
        "2": "lstm + none, h=128",
    }


def test_single_run_dirs_loaded_together_keep_one_line_each(tmp_path: Path) -> None:
    """A run directory passed as the sweep dir is named after itself, so two such loads do not collide."""
    bahdanau = write_job(tmp_path, "bahdanau", "bahdanau", 128, [40.0, 38.0, 33.0, 30.0])
    none = write_job(tmp_path, "none", "none", 128, [25.0, 12.0, 4.0, 2.0])
    runs = load_runs(bahdanau) + load_runs(none)
    assert [run.job for run in runs] == ["bahdanau", "none"]
    _, series = bleu_by_length_series(runs)
    assert series == {
        "gru + bahdanau, h=128": [40.0, 38.0, 33.0, 30.0],
        "gru + none, h=128": [25.0, 12.0, 4.0, 2.0],
    }


def test_read_metric_curves_handles_sparse_rows(sweep: Path) -> None:
    curves = read_metric_curves(sweep / "2" / "csv" / "version_0" / "metrics.csv")
    assert curves["train/loss"] == [(9, 3.5), (19, 3.0), (29, 2.5), (39, 2.0)]
    assert curves["val/bleu"] == [(19, 12.5), (39, 20.0)]


def test_load_runs_sorts_jobs_and_keeps_unreadable_ones(sweep: Path) -> None:
    (sweep / "4").mkdir()
    (sweep / "4" / "results.json").write_text('{"schema": 1, "status": ')
    runs = load_runs(sweep)
    assert [r.job for r in runs] == ["0", "1", "2", "3", "4", "10"]
    broken = runs[4]
    assert broken.status == "failed" and str(sweep / "4" / "results.json") in broken.error
    assert runs[2].metrics_csv is not None and len(runs[2].heatmaps) == 2
    assert runs[3].error.startswith("RuntimeError") and runs[3].hidden_size == 64


def test_missing_sweep_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_runs(tmp_path / "nowhere")
    (tmp_path / "empty" / "0").mkdir(parents=True)
    with pytest.raises(
        FileNotFoundError, match=f"no results.json found under sweep_dir={tmp_path / 'empty'}"
    ):
        build_dashboard(tmp_path / "empty")


def test_cli_reports_errors_and_writes_the_dashboard(
    sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("COLUMNS", "250")
    assert main([f"sweep_dir={tmp_path / 'nowhere'}"]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert main(["sweep=oops"]) == 2
    assert "unexpected argument 'sweep=oops'; usage: seq2seq-dashboard sweep_dir=DIR [out_dir=DIR]" in (
        capsys.readouterr().err
    )

    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0 and "sweep_dir=DIR" in capsys.readouterr().out
    assert main(["--nope"]) == 2
    assert "unrecognized arguments: --nope; usage: seq2seq-dashboard" in capsys.readouterr().err

    out_dir = tmp_path / "dash"
    assert main([f"sweep_dir={sweep}", f"out_dir={out_dir}"]) == 0
    printed = capsys.readouterr().out
    assert f"dashboard: {(out_dir / 'index.html').resolve()}" in printed
    assert "job 3 failed: RuntimeError: CUDA out of memory <in decoder> [rank 0]" in printed
    assert f"wandb sync {sweep}/*/wandb/offline-run-*" in printed
    assert "bahdanau" in printed and "4,321" in printed  # the summary table


def test_wandb_report_never_blocks_or_fails(
    sweep: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Online mode without network answers: the report is given up after the timeout, errors are one line."""
    monkeypatch.delenv("WANDB_MODE", raising=False)
    runs, console = load_runs(sweep), Console(width=300)
    release = threading.Event()
    monkeypatch.setattr(tracking, "create_wandb_report", lambda *_: release.wait(10))
    assert maybe_wandb_report(sweep, runs, console, timeout_s=0.1) is None
    release.set()
    assert "no answer from W&B within 0.1 s" in capsys.readouterr().out

    def refuse(*_: object) -> str:
        raise PermissionError("401 Unauthorized\n(a long traceback)")

    monkeypatch.setattr(tracking, "create_wandb_report", refuse)
    assert maybe_wandb_report(sweep, runs, console, timeout_s=5) is None
    printed = capsys.readouterr().out
    assert "(PermissionError: 401 Unauthorized)" in printed and "traceback" not in printed
    assert f"wandb sync {sweep}/*/wandb/offline-run-*" in printed

    monkeypatch.setattr(tracking, "create_wandb_report", lambda *_: "https://wandb.example/report")
    assert maybe_wandb_report(sweep, runs, console, timeout_s=5) == "https://wandb.example/report"
    assert "W&B report: https://wandb.example/report" in capsys.readouterr().out


# ------------------------------------------------------------------ look, axes, legends, status (issue 15)


@pytest.fixture
def drawn(monkeypatch):
    """Every figure the dashboard saves, by file stem (the matplotlib Figure, before it becomes a PNG)."""
    from seq2seq.dashboard import figures
    from seq2seq.evaluation import plots

    saved: dict[str, Figure] = {}
    for module in (figures, plots):
        original = module._save

        def keep(fig, path, original=original):
            saved[Path(path).stem] = fig
            return original(fig, path)

        monkeypatch.setattr(module, "_save", keep)
    return saved


def test_one_look_per_variant_in_every_figure(sweep: Path, drawn) -> None:
    from seq2seq.evaluation.style import ATTENTION_COLOURS, ENCODER_LINES, variant_style

    assert len(set(ATTENTION_COLOURS.values())) == len(ATTENTION_COLOURS)  # one colour per attention
    assert len({line for line, _ in ENCODER_LINES.values()}) == len(ENCODER_LINES)  # one dash per encoder
    bahdanau = variant_style({"model/encoder": "lstm", "model/attention": "bahdanau"})
    assert bahdanau["color"] == "#0072B2" and bahdanau["linestyle"] == "--"
    build_dashboard(sweep)
    for name in ("bleu_by_length", "bleu_vs_hidden", "training_curves"):
        lines = [line for ax in drawn[name].axes for line in ax.get_lines() if line.get_label()[0] != "_"]
        assert lines, name
        for line in lines:
            attention = "bahdanau" if "bahdanau" in line.get_label() else "none"
            assert line.get_color() == ATTENTION_COLOURS[attention], (name, line.get_label())
            assert line.get_linestyle() == "-", (name, line.get_label())  # every job here is a GRU


def test_bleu_axes_span_0_to_100_and_legends_sit_with_the_lines(sweep: Path, drawn) -> None:
    build_dashboard(sweep)
    assert drawn["bleu_by_length"].axes[0].get_ylim() == (0, 100)
    assert drawn["bleu_vs_hidden"].axes[0].get_ylim() == (0, 100)
    loss, bleu = drawn["training_curves"].axes
    assert bleu.get_ylim() == (0, 100)
    assert bleu.get_legend() is not None and bleu.get_lines()  # job 2's val/bleu is there: legend beside it


def test_an_empty_panel_says_why(tmp_path: Path, drawn) -> None:
    sweep = tmp_path / "s"
    job = write_job(sweep, "0", "bahdanau", 128, [40.0, None, None, None])
    write_job(sweep, "1", "none", 128, [30.0, None, None, None])
    (job / "metrics.csv").write_text("epoch,step,train/loss,val/bleu\n0,0,3.5,\n0,1,3.0,\n")  # no validation
    page = build_dashboard(sweep).read_text()
    loss, bleu = drawn["training_curves"].axes
    assert loss.get_legend() is not None and bleu.get_legend() is None  # the legend is where the lines are
    assert not bleu.get_lines() and "no validation ran" in " ".join(t.get_text() for t in bleu.texts)
    assert "BLEU vs. hidden size: not drawn, the completed jobs have 1 hidden size(s) [128]." in page
    assert "Token accuracy by output position: no completed job reports it." in page


def test_job_table_shows_what_varies_and_every_job_as_what_it_is(sweep: Path) -> None:
    from seq2seq.evaluation.record import write_sweep_plan

    interrupted = write_job(sweep, "4", "none", 64, [1.0, None, None, None])
    record = json.loads((interrupted / "results.json").read_text())
    record.update(status="interrupted", error="interrupted by SIGTERM at step 7; resume with: …")
    (interrupted / "results.json").write_text(json.dumps(record))
    write_sweep_plan(sweep, {"planned": 7, "swept": ["model/attention", "model.hidden_size"]})
    page = build_dashboard(sweep).read_text()
    head = page.split('<table id="jobs">')[1].split("</thead>")[0]
    for column in ("job", "status", "model/encoder", "model/attention", "hidden", "test/bleu"):
        assert f'data-key="{column}"' in head, column
    for shared in ("data", "teacher_forcing", "decoding"):  # the same in every job that ran
        assert f'data-key="{shared}"' not in head, shared
    assert 'data-key="test/alignment_accuracy"' not in head and "alignment" not in page  # no job has one
    assert "Every job: data = toy_translation, teacher_forcing = constant, decoding = greedy" in page
    assert page.count('class="job status-completed"') == 4 and page.count('class="job status-failed"') == 1
    assert page.count('class="job status-interrupted"') == 1 and "resume with" in page
    assert page.count('class="job status-never-ran"') == 2  # jobs 5 and 6 of the 7 planned
    assert "7 jobs: 4 completed, 1 failed, 1 interrupted, 1 never ran" not in page  # (counted, not guessed)
    assert "8 jobs: 4 completed, 1 failed, 1 interrupted, 2 never ran" in page
    assert "position: sticky" in page and "overflow-x: auto" in page


def test_the_wandb_report_colours_each_run_as_its_variant(sweep: Path) -> None:
    from seq2seq.dashboard.cli import run_colours
    from seq2seq.evaluation.style import ATTENTION_COLOURS

    (sweep / "0" / "wandb" / "offline-run-20240101_120000-abc123").mkdir(parents=True)
    (sweep / "1" / "wandb" / "offline-run-20240101_120100-def456").mkdir(parents=True)
    assert run_colours(load_runs(sweep)) == {  # job 0 is bahdanau, job 1 none; the others have no W&B run
        "abc123": ATTENTION_COLOURS["bahdanau"],
        "def456": ATTENTION_COLOURS["none"],
    }
