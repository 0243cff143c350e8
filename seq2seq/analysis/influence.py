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
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from seq2seq.console import make_console
from seq2seq.data.batching import Batch, PairDataset, collate
from seq2seq.data.errors import DataError
from seq2seq.data.tokenizer import PAD_ID
from seq2seq.models.seq2seq import EncoderDecoder
from seq2seq.results import write_json_atomic

if TYPE_CHECKING:
    from seq2seq.module import Seq2SeqModule

CONFIG = "conf/influence.yaml"
SCHEMA = 1
Pairs = list[tuple[str, str]]
TABLE_POSITIONS = (1, 2, 3, 5, 10, 20, 30, 40, 50, 60)  # absolute positions shown in the terminal table


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


def _positive_int(name: str, value: Any, allow_null: bool = False) -> int | None:
    if value is None and allow_null:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        null = " or null" if allow_null else ""
        raise ValueError(f"{CONFIG}: option `{name}` must be a positive integer{null}, got {value!r}.")
    return int(value)


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
        "max_sentences": _positive_int("max_sentences", cfg.max_sentences, allow_null=True),
        "batch_size": _positive_int("batch_size", cfg.batch_size),
        "bins": _positive_int("bins", cfg.bins),
        "max_positions": _positive_int("max_positions", cfg.max_positions),
        "length_groups": {k: list(v) for k, v in _length_groups(groups).items()},
        "objective": "sentence log-likelihood, teacher-forced",
    }


def find_checkpoint(run_dir: str | Path | None, ckpt_path: str | Path | None = None) -> Path:
    """``ckpt_path`` if given, else ``<run_dir>/checkpoints/best.ckpt``; clear errors when missing."""
    usage = "usage: python -m seq2seq.analysis.influence run_dir=<training run dir> [ckpt_path=<file>]"
    if run_dir is None:
        raise ValueError(f"missing run_dir (the directory of a finished training run); {usage}")
    if not Path(run_dir).is_dir():
        raise FileNotFoundError(f"run_dir={run_dir} does not exist or is not a directory; {usage}")
    if ckpt_path is not None:
        if not Path(ckpt_path).is_file():
            raise FileNotFoundError(f"ckpt_path={ckpt_path} does not exist; {usage}")
        return Path(ckpt_path)
    path = Path(run_dir) / "checkpoints" / "best.ckpt"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: run_dir must be a training run that saved checkpoints/best.ckpt, "
            f"or pass ckpt_path=<file>; {usage}"
        )
    return path


def load_test_split(
    module: Seq2SeqModule, max_sentences: int | None = None, cache_dir: str | Path | None = None
) -> tuple[Pairs, PairDataset]:
    """The run's test pairs and their ids: the first ``max_sentences`` of ``.raw["test"]``.

    The data module rebuilds the splits from the run's own data config (regenerated or re-read, then
    preprocessed as in training; tokenizers from ``cache_dir``, default the run's ``paths.cache_dir``).
    The ids come from the checkpoint's tokenizers, so they index the embeddings the model learned even
    if the cache was rebuilt since.
    """
    from seq2seq.data.datamodule import Seq2SeqDataModule  # Lightning: imported only when needed

    cache_dir = cache_dir or OmegaConf.select(module.cfg, "paths.cache_dir", default=".cache")
    datamodule = Seq2SeqDataModule(module.cfg.data, cache_dir, seed=module.cfg.seed)
    datamodule.setup("test")
    pairs = datamodule.raw["test"][:max_sentences]
    datamodule.src_tokenizer, datamodule.tgt_tokenizer = module.src_tokenizer, module.tgt_tokenizer
    return pairs, datamodule.encode(pairs)


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


def model_label(model: dict[str, Any]) -> str:
    """E.g. "gru + bahdanau, h=128" or "gru + none (init), h=128"."""
    context = f" ({model['context']})" if model["attention"] == "none" else ""
    return f"{model['encoder']} + {model['attention']}{context}, h={model['hidden_size']}"


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
    label = model_label(payload["model"])
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


def plot_influence(payload: dict[str, Any], path: Path) -> Path:
    """Two panels (relative and absolute position), one line per length group, ± one standard error."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.2))
    axes = fig.subplots(1, 2)
    for name, group in payload["groups"].items():
        if not group["n_sentences"]:
            continue
        edges = np.asarray(group["relative"]["edges"])
        centres = (edges[:-1] + edges[1:]) / 2
        for ax, curve, x in (
            (axes[0], group["relative"], centres),
            (axes[1], group["absolute"], np.asarray(group["absolute"]["positions"])),
        ):
            mean, std, n = (np.array(curve[k], dtype=float) for k in ("mean", "std", "n"))  # None → nan
            sem = std / np.sqrt(np.maximum(n, 1))
            (line,) = ax.plot(x, mean, marker=".", label=f"{name} (n={group['n_sentences']})")
            ax.fill_between(x, mean - sem, mean + sem, color=line.get_color(), alpha=0.2)
    for ax, xlabel in zip(
        axes, ("relative source position (position / length)", "source position"), strict=True
    ):
        ax.axhline(1.0, color="k", linestyle="--", linewidth=0.8)
        ax.set(xlabel=xlabel, ylabel="relative influence n·p (uniform = 1)")
        ax.grid(alpha=0.3)
    axes[0].set_xlim(0, 1)
    axes[1].legend(fontsize=8)
    fig.suptitle(f"Source influence on log p(reference) — {model_label(payload['model'])}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def table_rows(payload: dict[str, Any]) -> list[list[Any]]:
    """Flat rows ``[group, axis, bin, mean, std, n]`` (``bin``: lower edge, or 1-based position)."""
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


def _log_to_wandb(payload: dict[str, Any], png: Path, run_dir: Path, logger_cfg: Any) -> None:
    import wandb

    model = payload["model"]
    run = wandb.init(
        mode=logger_cfg.mode,
        project=logger_cfg.project,
        entity=logger_cfg.get("entity"),
        group=logger_cfg.get("group"),
        job_type="influence",
        tags=[
            f"attention:{model['attention']}",
            f"encoder:{model['encoder']}",
            f"hidden:{model['hidden_size']}",
        ],
        config={**payload["config"], "model": model, "checkpoint": payload["checkpoint"]},
        dir=str(run_dir),
    )
    try:
        columns = ["group", "axis", "bin", "mean", "std", "n"]
        run.log(
            {
                "influence/table": wandb.Table(columns=columns, data=table_rows(payload)),
                "influence/plot": wandb.Image(str(png)),
            }
        )
    finally:
        wandb.finish()


def run(cfg: DictConfig) -> dict[str, Any]:
    """Measure, print, write ``influence.json`` and ``plots/influence.png`` into the run dir; returns the JSON."""
    settings = settings_from_config(cfg)
    threads = _positive_int("threads", cfg.get("threads"), allow_null=True)
    if threads:
        torch.set_num_threads(threads)
    checkpoint = find_checkpoint(cfg.run_dir, cfg.get("ckpt_path"))
    from seq2seq.module import Seq2SeqModule  # Lightning: imported once the options and paths are valid

    run_dir = Path(cfg.run_dir)
    module = Seq2SeqModule.load_portable(str(checkpoint), map_location=cfg.device)
    model = module.model.to(cfg.device).eval()
    pairs, dataset = load_test_split(module, settings["max_sentences"], cfg.get("cache_dir"))
    summary = model_summary(module.cfg)
    profiles = influence_profiles(
        model, dataset, settings["batch_size"], summary["reverse_source"], cfg.device
    )
    words = [len(source.split()) for source, _ in pairs]
    groups = {k: tuple(v) for k, v in settings["length_groups"].items()}
    payload = {
        "schema": SCHEMA,
        "checkpoint": str(checkpoint),
        "config": settings,
        "model": summary,
        "n_sentences": len(profiles),
        "groups": summarise(profiles, words, settings["bins"], settings["max_positions"], groups),
    }
    write_json_atomic(run_dir / "influence.json", payload)
    png = plot_influence(payload, run_dir / "plots" / "influence.png")
    print_tables(payload)
    print(f"wrote {run_dir / 'influence.json'} and {png}")
    if cfg.logger.name == "wandb":
        _log_to_wandb(payload, png, run_dir, cfg.logger)
    return payload


@hydra.main(config_path="../../conf", config_name="influence", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except (ValueError, FileNotFoundError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
