"""Learned-model influence by source position: how much does token 1 still matter to a trained model?

For each test sentence ``x_1 … x_n`` with reference ``y_1 … y_m`` (``y_{m+1}`` = EOS), teacher-forced on
the reference with dropout off, the influence of source position ``j`` is the L2 norm of the gradient
of the sentence's log-likelihood with respect to that position's embedding ``e_j`` — first-derivative
saliency (Simonyan et al. 2014; Li et al. 2016, "Visualizing and understanding neural models in NLP"):

    g_j = || ∂/∂e_j  Σ_{t=1}^{m+1} log p(y_t | y_<t, x) ||_2

Each sentence's profile ``p_j = g_j / Σ_k g_k`` sums to 1. Tables and plots show the relative influence
``r_j = n · p_j`` (mean 1 over a sentence, so a flat line at 1 means every token matters equally) and
average it over sentences, by relative position (position ``j`` of ``n`` falls in bin
``⌊(j - ½) / n · bins⌋``) and by absolute position ``j = 1 … max_positions``, for all sentences and per
source-length group (words of the raw source). Positions are in the sentence's own order: with
``data.reverse_source`` the gradient is flipped back.

Padding gets exactly zero gradient (the packed encoder never reads it; attention masks it). Sentences
never interact, so one backward pass of the batch's summed log-likelihood gives every sentence's own
gradient.

Run: ``python -m seq2seq.analysis.influence run_dir=<training run dir> [max_sentences=300] [logger=wandb]``
"""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from seq2seq.analysis.options import positive_int, run_or_exit
from seq2seq.config import CONF_DIR
from seq2seq.data.batching import Batch, PairDataset, collate
from seq2seq.data.datamodule import load_split
from seq2seq.data.parallel import Pairs
from seq2seq.data.tokenizer import PAD_ID
from seq2seq.evaluation.console import make_console
from seq2seq.evaluation.plots import plot_influence
from seq2seq.evaluation.record import choices_from_config, run_label, run_tags, write_json_atomic
from seq2seq.evaluation.tracking import log_analysis
from seq2seq.inference.checkpoint import TrainedModel, find_checkpoint, load_checkpoint
from seq2seq.models.seq2seq import EncoderDecoder

CONFIG = "conf/influence.yaml"
SCHEMA = 1
TABLE_POSITIONS = (1, 2, 3, 5, 10, 20, 30, 40, 50, 60)  # absolute positions shown in the terminal table
TABLE_COLUMNS = ("group", "axis", "bin", "mean", "std", "n")
USAGE = "usage: python -m seq2seq.analysis.influence run_dir=<training run dir> [ckpt_path=<file>]"


def source_gradient_norms(model: EncoderDecoder, batch: Batch) -> Tensor:
    """``g`` ``(B, S)``: the L2 norm of ∂ log p(reference | source) / ∂(source embedding), per position.

    Teacher-forced on ``batch.tgt_in``; the log-likelihood sums log p of every non-padding label of
    ``batch.tgt_out`` (EOS included). Exactly zero at padding. The model must be in eval mode.
    """
    if model.training:
        raise ValueError("call model.eval() first: dropout would make the influence random")
    captured: list[Tensor] = []

    def as_leaf(module: torch.nn.Module, inputs: Any, output: Tensor) -> Tensor:
        leaf = output.detach().requires_grad_(True)  # (B, S, E)
        captured.append(leaf)
        return leaf

    handle = model.src_embedding.register_forward_hook(as_leaf)
    # cuDNN's RNN backward refuses eval mode; the native kernels compute the same gradient.
    try:
        with torch.enable_grad(), torch.backends.cudnn.flags(enabled=False):
            logits, _ = model(batch.src, batch.src_lengths, batch.tgt_in)  # (B, T, V)
            log_probs = logits.float().log_softmax(dim=-1)  # (B, T, V)
            gold = log_probs.gather(-1, batch.tgt_out.unsqueeze(-1)).squeeze(-1)  # (B, T)
            log_likelihood = gold.masked_fill(batch.tgt_out == PAD_ID, 0.0).sum()
            (grad,) = torch.autograd.grad(log_likelihood, captured[0])  # (B, S, E)
    finally:
        handle.remove()
    return grad.norm(dim=-1)  # (B, S)


def influence_profiles(
    model: EncoderDecoder,
    dataset: PairDataset,
    batch_size: int = 32,
    reverse_source: bool = False,
    device: str | torch.device = "cpu",
) -> list[np.ndarray]:
    """Per sentence, in dataset order, the profile ``p`` ``(n,)`` = ``g / Σ g`` (sums to 1).

    Sentences are batched ``batch_size`` at a time in order of length (little padding). With
    ``reverse_source`` (the model read the source reversed) each profile is flipped back to sentence order.
    """
    order = sorted(range(len(dataset)), key=lambda i: len(dataset[i].src))
    profiles: list[np.ndarray] = [np.empty(0)] * len(dataset)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = collate([dataset[i] for i in chunk]).to(device)
        norms = source_gradient_norms(model, batch).double().cpu().numpy()  # (B, S)
        for row, i in zip(norms, chunk, strict=True):
            g = row[: len(dataset[i].src)]
            if reverse_source:
                g = g[::-1]
            total = g.sum()
            if not total > 0:
                raise RuntimeError(
                    f"sentence {dataset[i].index}: the log-likelihood has zero gradient at every source "
                    "position (is the source disconnected from the decoder?)"
                )
            profiles[i] = g / total
    return profiles


def _stats(values_per_bin: list[list[float]]) -> dict[str, list]:
    """Mean, population std and count per bin; None where a bin is empty."""
    arrays = [np.asarray(v, dtype=float) for v in values_per_bin]
    return {
        "mean": [float(a.mean()) if a.size else None for a in arrays],
        "std": [float(a.std()) if a.size else None for a in arrays],
        "n": [int(a.size) for a in arrays],
    }


def relative_position_curve(profiles: list[np.ndarray], bins: int) -> dict[str, list]:
    """Relative influence ``n · p_j`` by relative position: ``edges`` and, per bin, mean/std/n over sentences.

    A sentence's value in a bin is the mean of its ``n · p_j`` there; a sentence with no position in a bin
    (``n < bins``) does not count for it.
    """
    per_bin: list[list[float]] = [[] for _ in range(bins)]
    for p in profiles:
        n = len(p)
        index = np.floor((np.arange(n) + 0.5) / n * bins).astype(int)  # (n,)
        totals = np.bincount(index, weights=n * p, minlength=bins)
        counts = np.bincount(index, minlength=bins)
        for b in np.flatnonzero(counts):
            per_bin[b].append(totals[b] / counts[b])
    return {"edges": [b / bins for b in range(bins + 1)], **_stats(per_bin)}


def absolute_position_curve(profiles: list[np.ndarray], max_positions: int) -> dict[str, list]:
    """Relative influence ``n · p_j`` at positions ``j = 1 … max_positions`` (sentences of length ≥ j)."""
    per_position: list[list[float]] = [[] for _ in range(max_positions)]
    for p in profiles:
        for k, value in enumerate(len(p) * p[:max_positions]):
            per_position[k].append(float(value))
    return {"positions": list(range(1, max_positions + 1)), **_stats(per_position)}


def summarise(
    profiles: list[np.ndarray],
    words: list[int],
    bins: int,
    max_positions: int,
    length_groups: dict[str, tuple[int, int | None]],
) -> dict[str, dict[str, Any]]:
    """Both curves for ``all`` sentences and for each length group ``name: (min_words, max_words or None)``."""
    groups = {"all": (1, None), **length_groups}
    summary = {}
    for name, (low, high) in groups.items():
        chosen = [p for p, w in zip(profiles, words, strict=True) if w >= low and (high is None or w <= high)]
        summary[name] = {
            "min_words": low,
            "max_words": high,
            "n_sentences": len(chosen),
            "relative": relative_position_curve(chosen, bins),
            "absolute": absolute_position_curve(chosen, max_positions),
        }
    return summary


# ---------------------------------------------------------------- options, checkpoint and data


def _length_groups(value: Any) -> dict[str, tuple[int, int | None]]:
    groups = {}
    for name, bounds in (value or {}).items():
        ok = isinstance(bounds, list | tuple) and len(bounds) == 2 and name != "all"
        low, high = bounds if ok else (None, None)
        ok = ok and _is_count(low) and (high is None or (_is_count(high) and high >= low))
        if not ok:
            raise ValueError(
                f"{CONFIG}: option `length_groups.{name}` must be [min_words, max_words] with "
                f"1 <= min_words <= max_words (max_words may be null; `all` is reserved), got {bounds!r}; "
                "override e.g. `length_groups.short=[1,20]`."
            )
        groups[str(name)] = (int(low), None if high is None else int(high))
    return groups


def _is_count(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1


def settings_from_config(cfg: DictConfig) -> dict[str, Any]:
    """The validated analysis options (what ``influence.json`` records under ``config``)."""
    groups = OmegaConf.to_container(cfg.length_groups) if cfg.length_groups is not None else {}
    return {
        "max_sentences": positive_int(CONFIG, "max_sentences", cfg.max_sentences, allow_null=True),
        "batch_size": positive_int(CONFIG, "batch_size", cfg.batch_size),
        "bins": positive_int(CONFIG, "bins", cfg.bins),
        "max_positions": positive_int(CONFIG, "max_positions", cfg.max_positions),
        "length_groups": {k: list(v) for k, v in _length_groups(groups).items()},
        "objective": "sentence log-likelihood, teacher-forced",
    }


def load_test_split(trained: TrainedModel, max_sentences: int | None = None) -> tuple[Pairs, PairDataset]:
    """The run's first ``max_sentences`` test pairs and their ids.

    The pairs are rebuilt from the run's own data config (regenerated or re-read, normalised as in
    training); the ids come from the checkpoint's tokenizers, so they index the embeddings the model learned.
    """
    pairs = load_split(trained.cfg.data, "test")[:max_sentences]
    return pairs, trained.encoder.encode(pairs)


def model_summary(cfg: Any) -> dict[str, Any]:
    """What distinguishes the model in plots and W&B: encoder, attention, context mode, sizes."""
    model = cfg.model
    return {
        "encoder": model.encoder.rnn_type,
        "bidirectional": bool(model.encoder.bidirectional),
        "attention": model.attention.name,
        "context": model.context,
        "hidden_size": model.hidden_size,
        "data": cfg.data.name,
        "reverse_source": bool(cfg.data.get("reverse_source", False)),
    }


# ---------------------------------------------------------------- output


def print_tables(payload: dict[str, Any]) -> None:
    """Rich tables of mean ± std relative influence: by relative-position bin, then by absolute position."""
    from rich.table import Table

    groups = payload["groups"]
    heads = [f"{name} (n={g['n_sentences']})" for name, g in groups.items()]

    def cell(curve: dict, i: int) -> str:
        mean = curve["mean"][i]
        return "–" if mean is None else f"{mean:.3f} ± {curve['std'][i]:.3f}"

    console = make_console()
    label = payload["label"]
    relative = Table(title=f"Relative influence n·p by relative source position — {label}")
    absolute = Table(title=f"Relative influence n·p by source position — {label}")
    relative.add_column("position / length", justify="right")
    absolute.add_column("position", justify="right")
    for head in heads:
        relative.add_column(head, justify="right")
        absolute.add_column(head, justify="right")
    edges = groups["all"]["relative"]["edges"]
    for b in range(len(edges) - 1):
        relative.add_row(
            f"{edges[b]:.2f}–{edges[b + 1]:.2f}", *(cell(g["relative"], b) for g in groups.values())
        )
    for position in (k for k in TABLE_POSITIONS if k <= len(groups["all"]["absolute"]["positions"])):
        absolute.add_row(str(position), *(cell(g["absolute"], position - 1) for g in groups.values()))
    console.print(relative)
    console.print(absolute)


def table_rows(payload: dict[str, Any]) -> list[list[Any]]:
    """Flat rows of :data:`TABLE_COLUMNS` (``bin``: lower edge, or 1-based position)."""
    rows = []
    for name, group in payload["groups"].items():
        relative, absolute = group["relative"], group["absolute"]
        for axis, curve, keys in (
            ("relative", relative, relative["edges"][:-1]),
            ("absolute", absolute, absolute["positions"]),
        ):
            rows += [
                [name, axis, k, m, s, n]
                for k, m, s, n in zip(keys, curve["mean"], curve["std"], curve["n"], strict=True)
            ]
    return rows


def run(cfg: DictConfig) -> dict[str, Any]:
    """Measure, print, write ``influence.json`` and ``plots/influence.png`` into the run dir; returns the JSON."""
    settings = settings_from_config(cfg)
    threads = positive_int(CONFIG, "threads", cfg.get("threads"), allow_null=True)
    if threads:
        torch.set_num_threads(threads)
    if cfg.run_dir is None:
        raise ValueError(f"{CONFIG}: missing run_dir (the directory of a finished training run); {USAGE}")
    run_dir = Path(cfg.run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run_dir={run_dir} does not exist or is not a directory; {USAGE}")
    option = "ckpt_path" if cfg.get("ckpt_path") else "run_dir"  # another checkpoint, else the run's
    checkpoint = find_checkpoint(cfg[option], option)
    trained = load_checkpoint(checkpoint, map_location=cfg.device)
    pairs, dataset = load_test_split(trained, settings["max_sentences"])
    summary = model_summary(trained.cfg)
    choices = choices_from_config(trained.cfg)
    label = run_label(choices, trained.cfg, context=True)
    profiles = influence_profiles(
        trained.model, dataset, settings["batch_size"], summary["reverse_source"], cfg.device
    )
    words = [len(source.split()) for source, _ in pairs]
    groups = {k: tuple(v) for k, v in settings["length_groups"].items()}
    payload = {
        "schema": SCHEMA,
        "checkpoint": str(checkpoint),
        "config": settings,
        "model": summary,
        "label": label,
        "n_sentences": len(profiles),
        "groups": summarise(profiles, words, settings["bins"], settings["max_positions"], groups),
    }
    write_json_atomic(run_dir / "influence.json", payload)
    png = plot_influence(
        payload["groups"],
        run_dir / "plots" / "influence.png",
        f"Source influence on log p(reference) — {label}",
    )
    print_tables(payload)
    print(f"wrote {run_dir / 'influence.json'} and {png}")
    if cfg.logger.name == "wandb":
        log_analysis(
            cfg.logger,
            run_dir,
            "influence",
            config={**payload["config"], "model": summary, "checkpoint": payload["checkpoint"]},
            tables={"influence/table": (TABLE_COLUMNS, table_rows(payload))},
            images={"influence/plot": png},
            tags=run_tags(choices, trained.cfg),
            group=cfg.logger.get("group"),
        )
    return payload


@hydra.main(config_path=CONF_DIR, config_name="influence", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_or_exit(run, cfg)


if __name__ == "__main__":
    main()
