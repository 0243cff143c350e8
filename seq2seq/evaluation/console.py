"""The terminal: the rich console every command prints with, and the tables that end a run and ``evaluate``."""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from seq2seq.evaluation.record import run_label

PIPE_WIDTH = 160  # logs and pipes get this many columns instead of rich's 80, so tables are not squeezed


def make_console(stderr: bool = False) -> Console:
    """A console as wide as the terminal, or :data:`PIPE_WIDTH` columns when writing to a file or pipe."""
    console = Console(stderr=stderr)
    return console if console.is_terminal else Console(stderr=stderr, width=PIPE_WIDTH)


def _fmt(value: float | None, digits: int = 1) -> str:
    """A number, or — when there is none (None, NaN)."""
    return "—" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def with_interval(value: float | None, interval: Sequence[float] | None, digits: int = 1) -> str:
    """``52.9 [48.3, 57.4]``: a score and its 95 % interval (the score alone when it has none)."""
    if value is None or not math.isfinite(value) or not interval:
        return _fmt(value, digits)
    return f"{value:.{digits}f} [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"


def length_table(rows: Sequence[dict], title: str) -> Table:
    """BLEU (with its 95 % interval when resampled), chrF and exact match per source-length bucket
    (``bleu_by_length`` rows); empty ones show —."""
    table = Table(title=title)
    for column in ("bucket", "n", "BLEU [95% CI]", "chrF", "exact %"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            row["bucket"],
            str(row["n"]),
            with_interval(row["bleu"], row.get("bleu_ci")),
            _fmt(row["chrf"]),
            _fmt(row["exact_match"]),
        )
    return table


def _entropy(metrics: dict, key: str, attention: str | None) -> str:
    if attention == "none":
        return "— (attention=none)"
    return _fmt(metrics.get(key), 3)


def print_summary(results: dict, run_dir: str, console: Console | None = None) -> None:
    """Test scores, size and speed of a finished run, then BLEU by source length (test, best validation)."""
    console = console or make_console()
    metrics, train = results["metrics"], results["train"]
    table = Table(title="seq2seq run summary", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    choices = results["choices"]
    table.add_row("model", run_label(choices, results["config"], hidden=False))
    table.add_row("data", choices.get("data", "?"))
    table.add_row("decoding", choices.get("decoding", "?"))
    table.add_row("test BLEU [95% CI]", with_interval(metrics.get("test/bleu"), metrics.get("test/bleu_ci")))
    table.add_row("test chrF [95% CI]", with_interval(metrics.get("test/chrf"), metrics.get("test/chrf_ci")))
    table.add_row("test exact match (%)", _fmt(metrics.get("test/exact_match")))
    best = with_interval(metrics.get("val/bleu"), metrics.get("val/bleu_ci"))
    if best == "—":
        best = "— (no validation ran: see trainer.val_check_interval, max_steps)"
    table.add_row("best val BLEU [95% CI]", best)
    attention = choices.get("model/attention")
    table.add_row("test attention entropy (nats)", _entropy(metrics, "test/attention_entropy", attention))
    if metrics.get("test/alignment_accuracy") is not None:
        table.add_row(
            "test alignment: argmax on gold % / AER %",
            f"{_fmt(metrics['test/alignment_accuracy'])} / {_fmt(metrics.get('test/aer'))}",
        )
    heads = {k.rsplit("/", 1)[1]: v for k, v in metrics.items() if k.startswith("test/alignment_accuracy/L")}
    if any(v is not None for v in heads.values()):  # a Transformer decoder: its best single head
        name, value = max(
            ((k, v) for k, v in heads.items() if "H" in k and v is not None), key=lambda kv: kv[1]
        )
        table.add_row("test alignment: best head (layer, head) %", f"{name} {_fmt(value)}")
    table.add_row("parameters", f"{results['params']:,}")
    table.add_row("training tokens/s", _fmt(train.get("tokens_per_s"), 0))
    table.add_row("steps / epochs", f"{train.get('steps')} / {train.get('epochs')}")
    table.add_row("wall time (s)", _fmt(train.get("wall_s"), 0))
    table.add_row("run directory", run_dir)
    console.print(table)
    console.print(length_table(results["bleu_by_length"], "test BLEU by source length (words)"))
    if results.get("val_bleu_by_length"):
        console.print(
            length_table(results["val_bleu_by_length"], "best validation BLEU by source length (words)")
        )


def print_evaluation(results: dict, out_dir: str, console: Console | None = None) -> None:
    """What ``evaluate`` scored and how, its scores, then BLEU by source length."""
    console = console or make_console()
    metrics, evaluated = results["metrics"], results["evaluated"]
    choices = results["choices"]
    table = Table(title="seq2seq evaluation", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    table.add_row("checkpoint", evaluated["checkpoint"])
    table.add_row("model", run_label(choices, results["config"], hidden=False))
    table.add_row("scored", evaluated["data"])
    table.add_row("sentences", str(evaluated["sentences"]))
    table.add_row("decoding", evaluated["decoding"])
    table.add_row("BLEU [95% CI]", with_interval(metrics.get("test/bleu"), metrics.get("test/bleu_ci")))
    table.add_row("chrF [95% CI]", with_interval(metrics.get("test/chrf"), metrics.get("test/chrf_ci")))
    table.add_row("exact match (%)", _fmt(metrics.get("test/exact_match")))
    table.add_row("loss", _fmt(metrics.get("test/loss"), 3))
    table.add_row(
        "attention entropy (nats)",
        _entropy(metrics, "test/attention_entropy", choices.get("model/attention")),
    )
    table.add_row("output directory", out_dir)
    console.print(table)
    console.print(length_table(results["bleu_by_length"], "BLEU by source length (words)"))
