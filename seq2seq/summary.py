"""The end-of-run summary printed to the terminal."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def _fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def print_summary(results: dict, run_dir: str, console: Console | None = None) -> None:
    """Test scores, size and speed of a finished run, then its BLEU by source length."""
    console = console or Console()
    metrics, train = results["metrics"], results["train"]
    table = Table(title="seq2seq run summary", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    choices = results["choices"]
    table.add_row("model", f"{choices.get('model/encoder', '?')} + {choices.get('model/attention', '?')}")
    table.add_row("data", choices.get("data", "?"))
    table.add_row("test BLEU", _fmt(metrics.get("test/bleu")))
    table.add_row("test chrF", _fmt(metrics.get("test/chrf")))
    table.add_row("test exact match (%)", _fmt(metrics.get("test/exact_match")))
    table.add_row("best val BLEU", _fmt(metrics.get("val/bleu")))
    table.add_row("parameters", f"{results['params']:,}")
    table.add_row("training tokens/s", _fmt(train.get("tokens_per_s"), 0))
    table.add_row("steps / epochs", f"{train.get('steps')} / {train.get('epochs')}")
    table.add_row("wall time (s)", _fmt(train.get("wall_s"), 0))
    table.add_row("run directory", run_dir)
    console.print(table)
    buckets = Table(title="test BLEU by source length (words)")
    for column in ("bucket", "n", "BLEU", "chrF", "exact %"):
        buckets.add_column(column, justify="right")
    for row in results["bleu_by_length"]:
        buckets.add_row(
            row["bucket"], str(row["n"]), _fmt(row["bleu"]), _fmt(row["chrf"]), _fmt(row["exact_match"])
        )
    console.print(buckets)
