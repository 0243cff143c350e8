"""The comparison of the two systems: ratios, the project's performance targets, caveats, the Markdown table.

Standard library only.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from typing import Any

SYSTEMS = ("seq2seq", "joeynmt")
LABELS = {"seq2seq": "seq2seq", "joeynmt": "JoeyNMT 2.3.0"}
PARAM_TOLERANCE = 0.05  # matched models: parameter counts within 5 %

# The project's performance targets (docs/performance.md): seq2seq / JoeyNMT ratios (speed: at least,
# memory: at most), and seq2seq's padding efficiency (absolute, at least).
PERFORMANCE_TARGETS = {
    "train_tokens_per_s": 3.0,
    "greedy_tokens_per_s": 3.0,
    "beam_tokens_per_s": 3.0,
    "padding_efficiency": 0.90,
    "peak_rss_mib": 1.0,
    "lightning_vs_harness": 0.90,  # the real Trainer loop's tokens/s over the harness loop's, seq2seq only
    "flop_utilisation": 0.50,  # seq2seq's training model FLOP/s over the measured matmul rate (Bible set-up)
}


def compare(systems: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """seq2seq / JoeyNMT ratios and which of the performance targets are met."""
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
    lightning = (ours.get("lightning") or {}).get("tgt_tokens_per_s")
    before, joey_train = ours["train"]["tgt_tokens_per_s"], joey["train"]["tgt_tokens_per_s"]
    after = (ours.get("train_after_lightning") or {}).get("tgt_tokens_per_s")
    # A/B/A: the harness ran before and after the Lightning loop; compare with the mean of the two when there
    harness = before if after is None else (before + after) / 2
    ratios["lightning_vs_harness"] = None if lightning is None else lightning / harness
    ratios["lightning_train_tokens_per_s"] = None if lightning is None else lightning / joey_train
    padding = ours["train"]["padding_efficiency"]["all"]
    met = {
        "params": ratios["params"] is not None and abs(ratios["params"] - 1) <= PARAM_TOLERANCE,
        "padding_efficiency": padding >= PERFORMANCE_TARGETS["padding_efficiency"],
        "peak_rss_mib": ratios["peak_rss_mib"] is not None
        and ratios["peak_rss_mib"] <= PERFORMANCE_TARGETS["peak_rss_mib"],
    }
    for key in ("train_tokens_per_s", "greedy_tokens_per_s", "beam_tokens_per_s", "lightning_vs_harness"):
        met[key] = None if ratios[key] is None else ratios[key] >= PERFORMANCE_TARGETS[key]
    utilisation = ours["train"].get("flop_utilisation")
    met["flop_utilisation"] = (
        None if utilisation is None else utilisation >= PERFORMANCE_TARGETS["flop_utilisation"]
    )
    return {"ratios": ratios, "met": met}


def round_orders(rounds: int) -> list[tuple[str, str]]:
    """The order the systems are measured in, round by round: seq2seq first, then JoeyNMT first, and so on
    (A B, B A, …), so that a machine drifting steadily over the minutes slows both alike in the medians."""
    return [SYSTEMS if r % 2 == 0 else SYSTEMS[::-1] for r in range(rounds)]


def combine_rounds(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One system's results over several rounds: each number the median of the rounds' values (the mean of
    two), nested dictionaries alike; anything else, and numbers equal in every round, as in the first round."""
    first = runs[0]
    combined: dict[str, Any] = {}
    for key, value in first.items():
        values = [run.get(key) for run in runs]
        if all(isinstance(v, dict) for v in values):
            combined[key] = combine_rounds(values)
        elif (
            all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
            and len(set(values)) > 1
        ):
            combined[key] = statistics.median(values)
        else:
            combined[key] = value
    return combined


ROUND_RATIOS = ("train_tokens_per_s", "greedy_tokens_per_s", "beam_tokens_per_s", "peak_rss_mib")


def round_ratios(runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, float | None]]:
    """seq2seq / JoeyNMT per round for training, both searches and memory: the spread the medians hide."""
    pairs = zip(runs["seq2seq"], runs["joeynmt"], strict=True)
    ratios = [compare({"seq2seq": ours, "joeynmt": joey})["ratios"] for ours, joey in pairs]
    return [{key: r[key] for key in ROUND_RATIOS} for r in ratios]


def format_rounds(results: dict[str, Any]) -> str:
    """The per-round ratios as a Markdown table (empty for a single round)."""
    rounds = results.get("rounds") or []
    if len(rounds) < 2:
        return ""
    lines = [
        "| round | measured first | train | greedy | beam | peak memory |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for number, entry in enumerate(rounds, 1):
        cells = [_num(entry["ratios"][key], 2) + "×" for key in ROUND_RATIOS]
        lines.append(f"| {number} | {LABELS[entry['order'][0]]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


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


def _at_least(key: str) -> str:
    return f"≥ {PERFORMANCE_TARGETS[key]:g}×"


def _decoding(kind: str, key: str, digits: int) -> Callable[[dict], str]:
    def get(system: dict) -> str:
        part = system.get(kind) or {"skipped": "not run"}
        return "skipped" if "skipped" in part else _num(part[key], digits)

    return get


def _lightning(system: dict) -> str:
    """seq2seq's tokens/s through ``Trainer.fit``; JoeyNMT's row is its own loop, already above."""
    part = system.get("lightning")
    return "–" if part is None else _num(part["tgt_tokens_per_s"])


def format_table(results: dict[str, Any]) -> str:
    """The comparison as a Markdown table: both systems, the ratio and the target of each row."""
    systems, ratios, met = results["systems"], results["comparison"]["ratios"], results["comparison"]["met"]
    peak = results["matmul_flops_per_s"]
    beam = f"beam {results['beam_size']}"
    share = ratios.get("lightning_vs_harness")
    lightning = f"≥ {PERFORMANCE_TARGETS['lightning_vs_harness']:.2f} × harness ({_num(share, 2)})" + _mark(
        met.get("lightning_vs_harness")
    )
    padding = f"≥ {PERFORMANCE_TARGETS['padding_efficiency']:.2f}" + _mark(met["padding_efficiency"])
    # (label, value of a system, ratio key or None, target)
    rows: list[tuple[str, Callable[[dict], str], str | None, str]] = [
        ("parameters", lambda s: f"{s['params'] / 1e6:.2f} M", "params",
         f"within {100 * PARAM_TOLERANCE:g} %"),
        ("train: target tokens/s (median)", lambda s: _num(s["train"]["tgt_tokens_per_s"]),
         "train_tokens_per_s", _at_least("train_tokens_per_s")),
        ("train through Lightning's Trainer: target tokens/s", _lightning,
         "lightning_train_tokens_per_s", lightning),
        ("train: source+target tokens/s (median)", lambda s: _num(s["train"]["src_tgt_tokens_per_s"]),
         "train_src_tgt_tokens_per_s", ""),
        ("train: real target tokens per update", lambda s: _num(s["train"]["tgt_tokens_per_update"]),
         None, ""),
        ("train: padding efficiency", lambda s: _num(s["train"]["padding_efficiency"]["all"], 3),
         None, padding),
        ("train: model GFLOPs per target token", lambda s: _num(s["train"]["flops_per_tgt_token"] / 1e9, 4),
         None, ""),
        (f"train: FLOP utilisation (of {peak / 1e9:.0f} GFLOP/s matmul)",
         lambda s: f"{100 * s['train']['model_flops_per_s'] / peak:.1f} %", None,
         f"seq2seq ≥ {100 * PERFORMANCE_TARGETS['flop_utilisation']:.0f} % (Bible)"
         + _mark(met.get("flop_utilisation"))),
        ("greedy: output tokens/s", _decoding("greedy", "output_tokens_per_s", 0), "greedy_tokens_per_s",
         _at_least("greedy_tokens_per_s")),
        ("greedy: sentences/s", _decoding("greedy", "sentences_per_s", 1), None, ""),
        ("greedy: mean output length", _decoding("greedy", "mean_output_length", 1), None, ""),
        (f"{beam}: output tokens/s", _decoding("beam", "output_tokens_per_s", 0), "beam_tokens_per_s",
         _at_least("beam_tokens_per_s")),
        (f"{beam}: sentences/s", _decoding("beam", "sentences_per_s", 1), None, ""),
        (f"{beam}: mean output length", _decoding("beam", "mean_output_length", 1), None, ""),
        ("peak resident memory (MiB)", lambda s: _num(s["peak_rss_mib"]), "peak_rss_mib",
         f"≤ {PERFORMANCE_TARGETS['peak_rss_mib']:g}×"),
    ]  # fmt: skip
    gpu_peak = results.get("gpu_bf16_peak_flops")
    if gpu_peak:  # on CUDA: model FLOP utilisation of the GPU's data-sheet bf16 peak
        rows.insert(
            7,
            (
                f"train: MFU (of the GPU's {gpu_peak / 1e12:.0f} TFLOP/s bf16 peak)",
                lambda s: f"{100 * s['train']['model_flops_per_s'] / gpu_peak:.1f} %",
                None,
                "",
            ),
        )
        rows.append(("peak GPU memory allocated (MiB)", lambda s: _num(s.get("peak_gpu_mib")), None, ""))
        # fmt: skip
    header = ["", *(LABELS[name] for name in SYSTEMS), "seq2seq / JoeyNMT", "target"]
    lines = ["| " + " | ".join(header) + " |", "|---|---:|---:|---:|---|"]
    for label, get, key, target in rows:
        ratio = "" if key is None else _num(ratios[key], 2) + "×"
        cells = [label, *(get(systems[name]) for name in SYSTEMS), ratio, target + _mark(met.get(key))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
