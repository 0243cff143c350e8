"""Benchmark measurements shared by seq2seq and JoeyNMT: timing, batch counts, FLOPs, memory, the table.

``scripts/benchmark.py`` (``make bench``) drives two worker processes, one per system, one after the other:
:func:`run_seq2seq` here for this project and ``scripts/joeynmt_bench.py`` in JoeyNMT's own virtualenv.
Both time their updates with :func:`time_updates`, their decoding with :func:`time_decoding`, pin their
threads with :func:`pin_threads` and read their own peak memory with :func:`peak_rss_mib`, so the method
is the same on both sides. This module therefore imports only the standard library and torch at module
level; :func:`run_seq2seq` imports the Lightning/Hydra parts of seq2seq when it runs.

Units: a *target token* is a non-padding label (``y_1 … y_n EOS``), as JoeyNMT's "Tokens per Sec" counts
them; *output tokens* are decoded tokens without EOS.

Model FLOPs count 2 per multiply–add of the matrix products on real (non-padding) tokens; a training update
costs 3× the forward pass (backward ≈ 2× forward; Kaplan et al. 2020, §2.1). Utilisation is achieved model
FLOP/s over the dense matmul FLOP/s of the same machine and threads (:func:`measure_matmul_flops`).
"""

from __future__ import annotations

import math
import os
import statistics
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

SYSTEMS = ("seq2seq", "joeynmt")
LABELS = {"seq2seq": "seq2seq", "joeynmt": "JoeyNMT 2.3.0"}
PARAM_TOLERANCE = 0.05  # matched models: parameter counts within 5 %

# The targets: seq2seq / JoeyNMT ratios (speed: at least, memory: at most), padding: absolute.
TARGETS = {
    "train_tokens_per_s": 1.5,
    "greedy_tokens_per_s": 2.0,
    "beam_tokens_per_s": 2.0,
    "padding_efficiency": 0.90,
    "peak_rss_mib": 1.0,
}


# ------------------------------------------------------------------------------------------ process set-up


def pin_threads(threads: int) -> list[int]:
    """Run this process on the first ``threads`` CPUs it may use (as ``taskset``) with that many torch threads."""
    if threads < 1:
        raise ValueError(f"--threads={threads}: must be at least 1")
    available = sorted(os.sched_getaffinity(0))
    if threads > len(available):
        raise ValueError(f"--threads={threads} but this process may use only CPUs {available}")
    cpus = available[:threads]
    os.sched_setaffinity(0, cpus)
    torch.set_num_threads(threads)
    return cpus


def peak_rss_mib() -> float:
    """This process's peak resident memory in MiB: ``VmHWM``, its own (not the parent's before ``exec``)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("/proc/self/status has no VmHWM line")


# ------------------------------------------------------------------------------------------ batches, timing


@dataclass(frozen=True)
class BatchShape:
    """What a training batch holds: real and padded token counts and attention reads.

    Attributes:
        sentences: ``B``.
        src_tokens, tgt_tokens: real source tokens and real target tokens (labels, with EOS).
        src_padded, tgt_padded: ``B · S`` and ``B · T`` of the padded tensors.
        src_tgt_pairs: ``Σ_i |x_i| · |y_i|``, the (target step, source position) pairs attention scores.
    """

    sentences: int
    src_tokens: int
    tgt_tokens: int
    src_padded: int
    tgt_padded: int
    src_tgt_pairs: int

    @classmethod
    def from_lengths(cls, src_lengths: Sequence[int], tgt_lengths: Sequence[int]) -> BatchShape:
        """From per-sentence lengths of a right-padded batch (padded width = the longest)."""
        src, tgt = [int(n) for n in src_lengths], [int(n) for n in tgt_lengths]
        if len(src) != len(tgt) or not src:
            raise ValueError(f"need equal, non-empty length lists; got {len(src)} and {len(tgt)}")
        return cls(
            sentences=len(src),
            src_tokens=sum(src),
            tgt_tokens=sum(tgt),
            src_padded=len(src) * max(src),
            tgt_padded=len(tgt) * max(tgt),
            src_tgt_pairs=sum(s * t for s, t in zip(src, tgt, strict=True)),
        )


@dataclass(frozen=True)
class UpdateRecord:
    """One timed update: the batch it consumed and its wall time (fetching the batch included)."""

    shape: BatchShape
    seconds: float


def time_updates(
    next_batch: Callable[[], Any],
    update: Callable[[Any], None],
    shape_of: Callable[[Any], BatchShape],
    warmup: int,
    updates: int,
) -> list[UpdateRecord]:
    """Run ``warmup + updates`` updates; return the records of the last ``updates``.

    Each record's time covers ``next_batch()`` (collation) and ``update(batch)`` (forward, backward,
    optimiser step); ``shape_of`` is read outside the timed region.
    """
    if updates < 1 or warmup < 0:
        raise ValueError(f"need updates >= 1 and warmup >= 0, got updates={updates}, warmup={warmup}")
    records = []
    for step in range(warmup + updates):
        start = time.perf_counter()
        batch = next_batch()
        update(batch)
        seconds = time.perf_counter() - start
        if step >= warmup:
            records.append(UpdateRecord(shape_of(batch), seconds))
    return records


def cycle(make_iterable: Callable[[int], Iterable[Any]]) -> Callable[[], Any]:
    """``next_batch`` for :func:`time_updates`: batches of epoch 0, 1, … (``make_iterable(epoch)``) in turn."""
    state: dict[str, Any] = {"epoch": 0, "it": iter(make_iterable(0))}

    def next_batch() -> Any:
        for _ in range(2):
            try:
                return next(state["it"])
            except StopIteration:
                state["epoch"] += 1
                state["it"] = iter(make_iterable(state["epoch"]))
        raise RuntimeError("the training loader yields no batches")

    return next_batch


def padding_efficiency(shapes: Iterable[BatchShape]) -> dict[str, float]:
    """Real tokens / tokens in the padded tensors: source, target and both together."""
    shapes = list(shapes)
    src = sum(s.src_tokens for s in shapes), sum(s.src_padded for s in shapes)
    tgt = sum(s.tgt_tokens for s in shapes), sum(s.tgt_padded for s in shapes)
    return {
        "source": src[0] / src[1],
        "target": tgt[0] / tgt[1],
        "all": (src[0] + tgt[0]) / (src[1] + tgt[1]),
    }


def summarise_training(records: Sequence[UpdateRecord], profile: FlopProfile) -> dict[str, Any]:
    """Throughput (median over updates of per-update tokens/s, and overall), batch sizes, padding, FLOP/s."""
    if not records:
        raise ValueError("no timed updates to summarise")
    shapes = [r.shape for r in records]
    seconds = sum(r.seconds for r in records)
    tgt = sum(s.tgt_tokens for s in shapes)
    src = sum(s.src_tokens for s in shapes)
    flops = sum(profile.training(s) for s in shapes)
    return {
        "updates": len(records),
        "seconds": seconds,
        "tgt_tokens_per_s": statistics.median(r.shape.tgt_tokens / r.seconds for r in records),
        "src_tgt_tokens_per_s": statistics.median(
            (r.shape.src_tokens + r.shape.tgt_tokens) / r.seconds for r in records
        ),
        "tgt_tokens_per_s_overall": tgt / seconds,
        "tgt_tokens_per_update": tgt / len(records),
        "src_tokens_per_update": src / len(records),
        "sentences_per_update": sum(s.sentences for s in shapes) / len(records),
        "padding_efficiency": padding_efficiency(shapes),
        "flops_per_tgt_token": flops / tgt,
        "model_flops_per_s": flops / seconds,
    }


def time_decoding(batches: Iterable[Any], search: Callable[[Any], list[int]]) -> dict[str, float]:
    """Decode every batch; ``search(batch)`` returns each sentence's output length (tokens, EOS excluded).

    The time covers the whole loop: collating batches and searching.
    """
    lengths: list[int] = []
    start = time.perf_counter()
    for batch in batches:
        lengths.extend(search(batch))
    seconds = time.perf_counter() - start
    if not lengths:
        raise ValueError("no sentences were decoded")
    return {
        "sentences": len(lengths),
        "output_tokens": sum(lengths),
        "seconds": seconds,
        "output_tokens_per_s": sum(lengths) / seconds,
        "sentences_per_s": len(lengths) / seconds,
        "mean_output_length": sum(lengths) / len(lengths),
    }


def length_before_eos(row: Sequence[int], eos_id: int, pad_id: int) -> int:
    """Tokens of a decoded row before its first EOS (the whole row when there is none), padding skipped."""
    n = 0
    for token in row:
        if token == eos_id:
            break
        n += token != pad_id
    return n


# ------------------------------------------------------------------------------------------ FLOPs


@dataclass(frozen=True)
class FlopProfile:
    """Forward FLOPs (2 per multiply–add) of an attentional RNN encoder–decoder, by what they scale with."""

    per_src_token: int
    per_tgt_token: int
    per_sentence: int
    per_src_tgt_pair: int

    def forward(self, shape: BatchShape) -> int:
        return (
            self.per_src_token * shape.src_tokens
            + self.per_tgt_token * shape.tgt_tokens
            + self.per_sentence * shape.sentences
            + self.per_src_tgt_pair * shape.src_tgt_pairs
        )

    def training(self, shape: BatchShape) -> int:
        """Forward + backward ≈ 3 × forward."""
        return 3 * self.forward(shape)


RNN_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "GRU": 3, "LSTM": 4}


def rnn_token_macs(rnn: nn.RNNBase) -> int:
    """Multiply–adds per token of a (stacked, possibly bidirectional) ``nn.RNN``/``GRU``/``LSTM``."""
    gates = RNN_GATES[rnn.mode]
    directions = 2 if rnn.bidirectional else 1
    macs, inputs = 0, rnn.input_size
    for _ in range(rnn.num_layers):
        macs += directions * gates * (inputs * rnn.hidden_size + rnn.hidden_size * rnn.hidden_size)
        inputs = rnn.hidden_size * directions
    return macs


def _macs(layer: nn.Linear | None) -> int:
    return 0 if layer is None else layer.in_features * layer.out_features


def seq2seq_flop_profile(model: nn.Module) -> FlopProfile:
    """The profile of a :class:`seq2seq.models.seq2seq.EncoderDecoder` (any attention, any cell)."""
    decoder = model.decoder
    attention = decoder.attention
    memory = decoder.hidden_size
    keys = getattr(attention, "key_layer", None)
    if attention is None:
        pair = 0
    elif hasattr(attention, "energy_layer"):  # additive: vᵀ tanh(·) per position, then the context
        pair = attention.energy_layer.in_features + memory
    else:  # dot / general: qᵀ k per position, then the context
        pair = (keys.out_features if keys is not None else memory) + memory
    return FlopProfile(
        per_src_token=2 * (rnn_token_macs(model.encoder.rnn) + _macs(keys)),
        per_tgt_token=2
        * (
            rnn_token_macs(decoder.rnn)
            + _macs(getattr(attention, "query_layer", None))
            + _macs(decoder.output_layer)
            + _macs(decoder.generator)
        ),
        per_sentence=2 * _macs(decoder.bridge) * decoder.num_layers,
        per_src_tgt_pair=2 * pair,
    )


def joeynmt_flop_profile(model: nn.Module) -> FlopProfile:
    """The profile of a JoeyNMT 2.3 recurrent model (``RecurrentEncoder`` + ``RecurrentDecoder``)."""
    decoder = model.decoder
    attention = decoder.attention
    memory = model.encoder.output_size
    keys = attention.key_layer
    energy = getattr(attention, "energy_layer", None)  # Bahdanau; Luong scores with qᵀ W k
    pair = (energy.in_features if energy is not None else keys.out_features) + memory
    bridge = getattr(decoder, "bridge_layer", None)
    return FlopProfile(
        per_src_token=2 * (rnn_token_macs(model.encoder.rnn) + _macs(keys)),
        per_tgt_token=2
        * (
            rnn_token_macs(decoder.rnn)
            + _macs(getattr(attention, "query_layer", None))
            + _macs(decoder.att_vector_layer)
            + _macs(decoder.output_layer)
        ),
        per_sentence=2 * _macs(bridge) * decoder.num_layers,
        per_src_tgt_pair=2 * pair,
    )


def counted_flops(run: Callable[[], Any]) -> int:
    """FLOPs torch's ``FlopCounterMode`` counts while ``run()`` executes (to check a :class:`FlopProfile`)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        run()
    return int(counter.get_total_flops())


def measure_matmul_flops(size: int = 1024, seconds: float = 2.0) -> float:
    """Dense float32 matmul FLOP/s of this process's threads: best of repeated ``size³`` products."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    out = torch.empty(size, size)
    torch.mm(a, b, out=out)  # warm-up
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or best == 0.0:
        start = time.perf_counter()
        for _ in range(4):
            torch.mm(a, b, out=out)
        best = max(best, 4 * 2 * size**3 / (time.perf_counter() - start))
    return best


# ------------------------------------------------------------------------------------------ matching the set-up


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def closest_size(target: int, count: Callable[[int], int], candidates: Iterable[int]) -> tuple[int, int]:
    """The candidate size whose parameter count ``count(size)`` is nearest ``target``: ``(size, count)``."""
    best = min(((abs(count(c) - target), c) for c in candidates), default=None)
    if best is None:
        raise ValueError("no candidate sizes to choose from")
    return best[1], count(best[1])


def mean_target_tokens(batches: Iterable[Sequence[int]], tgt_lengths: Sequence[int]) -> float:
    """Mean real target tokens per batch (``tgt_lengths`` already count EOS)."""
    totals = [sum(tgt_lengths[i] for i in batch) for batch in batches]
    return sum(totals) / len(totals)


def calibrate_budget(
    mean_for_budget: Callable[[int], float], target: float, low: int, high: int
) -> tuple[int, float]:
    """The smallest budget in ``[low, high]`` whose mean target tokens per batch reach ``target`` (bisection).

    ``mean_for_budget`` must grow with the budget (it does for a token-budget sampler, up to noise).
    """
    if low > high:
        raise ValueError(f"empty budget range [{low}, {high}]")
    while low < high:
        mid = (low + high) // 2
        if mean_for_budget(mid) < target:
            low = mid + 1
        else:
            high = mid
    return low, mean_for_budget(low)


# ------------------------------------------------------------------------------------------ comparison, table


def compare(systems: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """seq2seq / JoeyNMT ratios and whether each target of the issue is met."""
    ours, joey = systems["seq2seq"], systems["joeynmt"]

    def ratio(get: Callable[[dict], float | None]) -> float | None:
        a, b = get(ours), get(joey)
        return None if a is None or b is None or b == 0 else a / b

    def decode(kind: str) -> Callable[[dict], float | None]:
        return lambda s: (s.get(kind) or {}).get("output_tokens_per_s")

    ratios = {
        "params": ratio(lambda s: s["params"]),
        "train_tokens_per_s": ratio(lambda s: s["train"]["tgt_tokens_per_s"]),
        "train_src_tgt_tokens_per_s": ratio(lambda s: s["train"]["src_tgt_tokens_per_s"]),
        "greedy_tokens_per_s": ratio(decode("greedy")),
        "greedy_sentences_per_s": ratio(lambda s: s["greedy"]["sentences_per_s"]),
        "beam_tokens_per_s": ratio(decode("beam")),
        "peak_rss_mib": ratio(lambda s: s["peak_rss_mib"]),
    }
    padding = ours["train"]["padding_efficiency"]["all"]
    met = {
        "params": ratios["params"] is not None and abs(ratios["params"] - 1) <= PARAM_TOLERANCE,
        "padding_efficiency": padding >= TARGETS["padding_efficiency"],
        "peak_rss_mib": ratios["peak_rss_mib"] is not None
        and ratios["peak_rss_mib"] <= TARGETS["peak_rss_mib"],
    }
    for key in ("train_tokens_per_s", "greedy_tokens_per_s", "beam_tokens_per_s"):
        met[key] = None if ratios[key] is None else ratios[key] >= TARGETS[key]
    return {"ratios": ratios, "met": met}


def caveats(results: dict[str, Any]) -> list[str]:
    """Warnings about a result: what makes a number in it weaker than it looks.

    Parameter counts more than 5 % apart, a FLOP profile torch's counter disagrees with, a skipped search, or
    decoding that stops almost at once (an undertrained model; its tokens/s is then mostly per-batch cost).
    """
    notes = []
    ratio = results["comparison"]["ratios"]["params"]
    if ratio is None or abs(ratio - 1) > PARAM_TOLERANCE:
        notes.append(
            f"parameter counts differ by more than {PARAM_TOLERANCE:.0%} (ratio {ratio}): not a fair match"
        )
    reference = results["systems"]["seq2seq"].get("reference_mean_length")
    for name, system in results["systems"].items():
        check = system["flop_check"]
        if abs(check["counted"] - check["predicted"]) > 0.01 * check["counted"]:
            notes.append(
                f"{name}: FLOP profile predicts {check['predicted']:,}, torch counts {check['counted']:,}"
            )
        for kind in ("greedy", "beam"):
            part = system.get(kind) or {"skipped": "not run"}
            if "skipped" in part:
                notes.append(f"{name}: {kind} skipped: {part['skipped']}")
            elif reference and part["mean_output_length"] < 0.25 * reference:
                notes.append(
                    f"{name}: {kind} outputs average {part['mean_output_length']:.1f} tokens (references "
                    f"{reference:.1f}): the undertrained model stops at once, so tokens/s is mostly per-batch "
                    "cost; more --updates give a more representative decoding measurement"
                )
    return notes


def _num(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}"


def _mark(met: bool | None) -> str:
    return "" if met is None else (" ✓" if met else " ✗")


def _decoding(kind: str, key: str, digits: int) -> Callable[[dict], str]:
    def get(system: dict) -> str:
        part = system.get(kind) or {"skipped": "not run"}
        return "skipped" if "skipped" in part else _num(part[key], digits)

    return get


def format_table(results: dict[str, Any]) -> str:
    """The comparison as a Markdown table: both systems, the ratio and the target of each row."""
    systems, ratios, met = results["systems"], results["comparison"]["ratios"], results["comparison"]["met"]
    peak = results["matmul_flops_per_s"]
    beam = f"beam {results['beam_size']}"
    # (label, value of a system, ratio key or None, target)
    rows: list[tuple[str, Callable[[dict], str], str | None, str]] = [
        ("parameters", lambda s: f"{s['params'] / 1e6:.2f} M", "params", "within 5 %"),
        ("train: target tokens/s (median)", lambda s: _num(s["train"]["tgt_tokens_per_s"]),
         "train_tokens_per_s", "≥ 1.5×"),
        ("train: source+target tokens/s (median)", lambda s: _num(s["train"]["src_tgt_tokens_per_s"]),
         "train_src_tgt_tokens_per_s", ""),
        ("train: real target tokens per update", lambda s: _num(s["train"]["tgt_tokens_per_update"]), None, ""),
        ("train: padding efficiency", lambda s: _num(s["train"]["padding_efficiency"]["all"], 3),
         None, "≥ 0.90" + _mark(met["padding_efficiency"])),
        ("train: model GFLOPs per target token", lambda s: _num(s["train"]["flops_per_tgt_token"] / 1e9, 4),
         None, ""),
        (f"train: FLOP utilisation (of {peak / 1e9:.0f} GFLOP/s matmul)",
         lambda s: f"{100 * s['train']['model_flops_per_s'] / peak:.1f} %", None, ""),
        ("greedy: output tokens/s", _decoding("greedy", "output_tokens_per_s", 0), "greedy_tokens_per_s", "≥ 2×"),
        ("greedy: sentences/s", _decoding("greedy", "sentences_per_s", 1), None, ""),
        ("greedy: mean output length", _decoding("greedy", "mean_output_length", 1), None, ""),
        (f"{beam}: output tokens/s", _decoding("beam", "output_tokens_per_s", 0), "beam_tokens_per_s", "≥ 2×"),
        (f"{beam}: sentences/s", _decoding("beam", "sentences_per_s", 1), None, ""),
        (f"{beam}: mean output length", _decoding("beam", "mean_output_length", 1), None, ""),
        ("peak resident memory (MiB)", lambda s: _num(s["peak_rss_mib"]), "peak_rss_mib", "≤ 1×"),
    ]  # fmt: skip
    header = ["", *(LABELS[name] for name in SYSTEMS), "seq2seq / JoeyNMT", "target"]
    lines = ["| " + " | ".join(header) + " |", "|---|---:|---:|---:|---|"]
    for label, get, key, target in rows:
        ratio = "" if key is None else _num(ratios[key], 2) + "×"
        cells = [label, *(get(systems[name]) for name in SYSTEMS), ratio, target + _mark(met.get(key))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ this project's side


def compose_config(overrides: Sequence[str]) -> Any:
    """``conf/train.yaml`` composed with ``overrides``, as ``python -m seq2seq.train`` would."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def run_seq2seq(plan: dict[str, Any]) -> dict[str, Any]:
    """Measure this project through its real code paths (run in a process of its own).

    The data module's tokenizers and ``TokenBudgetBatchSampler`` batches feed a plain loop of
    ``Seq2SeqModule.training_step`` → backward → gradient clipping (``trainer.gradient_clip_val``) → the
    module's Adam step; then ``greedy_search`` and ``beam_search`` decode the first ``decode_sentences``
    test sentences in the data module's test batches.

    Args:
        plan: ``overrides`` (Hydra), ``threads``, ``warmup``, ``updates``, ``decode_sentences``,
            ``beam_size``, ``beam_alpha``, ``max_length_ratio``, ``max_length_constant``.
    """
    from seq2seq.data.batching import PairDataset
    from seq2seq.data.datamodule import Seq2SeqDataModule
    from seq2seq.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
    from seq2seq.models import search
    from seq2seq.module import Seq2SeqModule

    cpus = pin_threads(plan["threads"])
    cfg = compose_config(plan["overrides"])
    torch.manual_seed(cfg.seed)
    datamodule = Seq2SeqDataModule(cfg.data, cfg.paths.cache_dir, seed=cfg.seed)
    datamodule.setup("fit")
    module = Seq2SeqModule(cfg, datamodule.src_tokenizer, datamodule.tgt_tokenizer)
    model = module.model
    optimizers = module.configure_optimizers()
    optimizer = optimizers["optimizer"] if isinstance(optimizers, dict) else optimizers
    clip = cfg.trainer.get("gradient_clip_val")
    profile = seq2seq_flop_profile(model)

    def update(batch: Any) -> None:
        loss = module.training_step(batch, 0)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(module.parameters(), clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def shape_of(batch: Any) -> BatchShape:
        return BatchShape.from_lengths(batch.src_lengths.tolist(), (batch.tgt_out != PAD_ID).sum(1).tolist())

    def epoch(number: int) -> Any:
        loader = datamodule.train_dataloader()
        loader.batch_sampler.set_epoch(number)
        return loader

    module.train()
    with warnings.catch_warnings():  # training_step's self.log() has no Trainer to log to here
        warnings.filterwarnings("ignore", message=".*self.log.*")
        records = time_updates(cycle(epoch), update, shape_of, plan["warmup"], plan["updates"])

    module.eval()
    test = PairDataset(datamodule.datasets["test"].examples[: plan["decode_sentences"]])
    datamodule.datasets["test"] = test  # test_dataloader() now serves these sentences

    def searcher(beam: bool) -> Callable[[Any], list[int]]:
        def run(batch: Any) -> list[int]:
            budgets = search.max_output_lengths(
                batch.src_lengths, plan["max_length_ratio"], plan["max_length_constant"]
            )
            args = (model, batch.src, batch.src_lengths, budgets, BOS_ID, EOS_ID)
            if beam:
                hyps = search.beam_search(*args, beam_size=plan["beam_size"], alpha=plan["beam_alpha"])
            else:
                hyps = search.greedy_search(*args)
            return [len(tokens) for tokens in hyps.tokens]

        return run

    result: dict[str, Any] = {"greedy": time_decoding(datamodule.test_dataloader(), searcher(beam=False))}
    if hasattr(search, "beam_search"):
        result["beam"] = time_decoding(datamodule.test_dataloader(), searcher(beam=True))
    else:
        result["beam"] = {"skipped": "seq2seq.models.search has no beam_search yet"}
    return {
        **result,
        "reference_mean_length": sum(len(e.tgt) for e in test.examples) / len(test),
        "params": parameter_count(model),
        "train": summarise_training(records, profile),
        "flop_profile": asdict(profile),
        "flop_check": _flop_check(model, profile),
        "peak_rss_mib": peak_rss_mib(),
        "cpus": cpus,
        "threads": torch.get_num_threads(),
        "setup": {
            "embedding_size": cfg.model.embedding_size,
            "hidden_size": cfg.model.hidden_size,
            "max_tokens": cfg.data.batch.max_tokens,
            "eval_max_tokens": cfg.data.batch.eval_max_tokens,
            "src_vocab": datamodule.src_tokenizer.vocab_size,
            "tgt_vocab": datamodule.tgt_tokenizer.vocab_size,
        },
    }


def _flop_check(model: nn.Module, profile: FlopProfile) -> dict[str, int]:
    """Counted (``FlopCounterMode``) vs predicted forward FLOPs on an unpadded 2 × 5 → 2 × 4 batch."""
    src = torch.full((2, 5), 5, dtype=torch.long)
    tgt = torch.full((2, 4), 5, dtype=torch.long)
    counted = counted_flops(lambda: model(src, torch.tensor([5, 5]), tgt))
    return {"counted": counted, "predicted": profile.forward(BatchShape.from_lengths([5, 5], [4, 4]))}
