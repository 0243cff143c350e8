"""Linear first-token retention: how much of token 1 survives T recurrent steps of a contraction.

A linear RNN h_t = W h_{t-1} + U x_t carries the first token's contribution into the final state
(the fixed context vector c = h_T) through the product W^T, so ||W^T||_2 (largest singular value) is
the most any unit-norm first-token signal can still weigh in c. W is a random Gaussian h x h matrix
rescaled to spectral radius rho. Two bounds frame the measurement:

    rho^T  <=  ||W^T||_2  <=  ||W||_2^T

The left one holds because the spectral radius never exceeds an induced norm and rho(W^T) = rho^T
(Gelfand: ||W^T||^(1/T) -> rho as T -> infinity); the right one is submultiplicativity. A non-normal
W can therefore *amplify* the signal for a few steps before the rho^T decay wins.

The matrix is drawn with ``np.random.RandomState(seed).randn(h, h)``: the same stream as the seed
article's ``np.random.seed(seed); np.random.randn(h, h)``, without touching numpy's global state.

Run: ``python -m seq2seq.analysis.retention [seed=0] [spectral_radius=0.95] [steps=[5,50]] ...``
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from seq2seq.config import CONF_DIR
from seq2seq.evaluation.console import make_console
from seq2seq.evaluation.tracking import log_analysis

CONFIG = "conf/retention.yaml"


def _check_positive_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(f"{CONFIG}: option `{name}` must be a number > 0, got {value!r}.")
    return float(value)


def _check_int_list(name: str, values: Any, minimum: int) -> list[int]:
    """Validate a list option of integers >= ``minimum``; returns it sorted, without duplicates."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
        raise ValueError(f"{CONFIG}: option `{name}` must be a non-empty list of integers, got {values!r}.")
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < minimum]
    if bad:
        kind = "positive integers" if minimum == 1 else f"integers >= {minimum}"
        raise ValueError(
            f"{CONFIG}: option `{name}` must hold {kind}, got {bad} in {list(values)}; "
            f"override e.g. `{name}=[1,5,10]`."
        )
    return sorted({int(v) for v in values})


def scaled_recurrent_matrix(hidden_size: int, spectral_radius: float, seed: int) -> np.ndarray:
    """Random Gaussian (h, h) matrix rescaled so that max |eigenvalue| == ``spectral_radius``."""
    (hidden_size,) = _check_int_list("hidden_sizes", [hidden_size], minimum=1)
    rho = _check_positive_number("spectral_radius", spectral_radius)
    a = np.random.RandomState(seed).randn(hidden_size, hidden_size)  # (h, h)
    current = np.max(np.abs(np.linalg.eigvals(a)))
    if current == 0.0:
        raise ValueError(
            f"seed={seed}, hidden_size={hidden_size}: drew a nilpotent matrix; pick another seed."
        )
    return a * (rho / current)


def _norms_of_powers(w: np.ndarray, steps: Sequence[int]) -> list[float]:
    """||W^T||_2 for each T in sorted ``steps``, from one pass of M <- W @ M starting at the identity."""
    m = np.eye(w.shape[0])  # (h, h)
    norms, done = [], 0
    for t in steps:
        for _ in range(t - done):
            m = w @ m  # (h, h)
        done = t
        norms.append(float(np.linalg.norm(m, ord=2)))
    return norms


def first_token_retention(steps: int, hidden_size: int, spectral_radius: float, seed: int) -> float:
    """||W^T||_2 with T = ``steps`` (0 gives the identity's norm, 1.0) and W from scaled_recurrent_matrix."""
    (steps,) = _check_int_list("steps", [steps], minimum=0)
    w = scaled_recurrent_matrix(hidden_size, spectral_radius, seed)
    return _norms_of_powers(w, [steps])[0]


def retention_table(
    steps: Sequence[int], hidden_sizes: Sequence[int], spectral_radius: float, seed: int
) -> list[dict[str, float | int]]:
    """One row per (hidden_size, T): the retained norm ||W^T||_2, the envelope rho^T and their ratio.

    Every hidden size uses the same ``seed`` (as the article does), and all T share that size's W.
    """
    steps = _check_int_list("steps", steps, minimum=1)
    hidden_sizes = _check_int_list("hidden_sizes", hidden_sizes, minimum=1)
    rho = _check_positive_number("spectral_radius", spectral_radius)
    rows = []
    for h in hidden_sizes:
        norms = _norms_of_powers(scaled_recurrent_matrix(h, rho, seed), steps)
        for t, norm in zip(steps, norms, strict=True):
            envelope = rho**t
            rows.append(
                {
                    "hidden_size": h,
                    "steps": t,
                    "retained_norm": norm,
                    "envelope": envelope,
                    "ratio": norm / envelope,
                }
            )
    return rows


def print_table(rows: list[dict], spectral_radius: float) -> None:
    """Rich table: hidden sizes as rows, T as columns, and a last row with rho^T."""
    from rich.table import Table

    steps = sorted({r["steps"] for r in rows})
    table = Table(title=f"First-token retention ||W^T||_2 (spectral radius {spectral_radius:g})")
    table.add_column("h", justify="right")
    for t in steps:
        table.add_column(f"T={t}", justify="right")
    for h in sorted({r["hidden_size"] for r in rows}):
        by_t = {r["steps"]: r["retained_norm"] for r in rows if r["hidden_size"] == h}
        table.add_row(str(h), *(f"{by_t[t]:.4g}" for t in steps))
    table.add_row("rho^T", *(f"{spectral_radius**t:.4g}" for t in steps), style="dim")
    console = make_console()
    console.print(table)


def plot_retention(rows: list[dict], spectral_radius: float, path: Path) -> Path:
    """Log-scale plot of retained norm vs. T, one line per hidden size, with the rho^T reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for h in sorted({r["hidden_size"] for r in rows}):
        mine = sorted((r["steps"], r["retained_norm"]) for r in rows if r["hidden_size"] == h)
        ax.plot([t for t, _ in mine], [n for _, n in mine], marker="o", label=f"h={h}")
    steps = np.array(sorted({r["steps"] for r in rows}))
    ax.plot(steps, spectral_radius**steps, "k--", label=rf"$\rho^T$ ($\rho$={spectral_radius:g})")
    ax.set_yscale("log")
    ax.set_xlabel("recurrent steps T after the first token")
    ax.set_ylabel(r"retained norm $\|W^T\|_2$")
    ax.set_title("Linear first-token retention")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run(cfg: DictConfig) -> dict:
    """Compute the table, print it, write retention.json and retention.png; returns the JSON payload."""
    settings = {
        key: OmegaConf.to_container(cfg[key]) if OmegaConf.is_config(cfg[key]) else cfg[key]
        for key in ("seed", "spectral_radius", "steps", "hidden_sizes")
    }
    rows = retention_table(**settings)
    output_dir = Path(cfg.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    payload = {"schema": 1, "config": settings, "rows": rows}
    (output_dir / "retention.json").write_text(json.dumps(payload, indent=2) + "\n")
    png = plot_retention(rows, settings["spectral_radius"], output_dir / "retention.png")
    print_table(rows, settings["spectral_radius"])
    print(f"wrote {output_dir / 'retention.json'} and {png}")
    if cfg.logger.name == "wandb":
        columns = list(rows[0])
        log_analysis(
            cfg.logger,
            output_dir,
            "retention",
            config=settings,
            tables={"retention/table": (columns, [[r[c] for c in columns] for r in rows])},
            images={"retention/plot": png},
        )
    return payload


@hydra.main(config_path=CONF_DIR, config_name="retention", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
