"""Greedy and beam decoding of the benchmark's model, timed at several decoding batch budgets, with and without
refilled rows and row-major weight copies (optionally profiled).

    .venv/bin/python scripts/benchmark/decode_times.py [--corpus data/bible] [--budget 2000]... [--refill on]...
        [--copies on]... [--profile]

The model and data are the benchmark's (``seq2seq_side.py``: bi-GRU encoder, GRU decoder with Bahdanau attention
and input feeding, the hidden size matched to JoeyNMT's: 288 on the Bible, 304 on the toy task), trained for
``--train-updates`` harness updates (the benchmark's 220 by default, so that it emits end-of-sentence as the
benchmark's model does), then decoding the first ``--sentences`` test sentences in length-sorted batches, the
longest first (as the benchmark), under each ``--budget`` (``data.batch.eval_max_tokens``) with and without
``decoding.refill`` (continuous batching) and with and without ``--copies`` (``onednn.row_major_copies``, made a
no-op for ``off``), with the benchmark's output budget (``1.5 · (|x| + 1)``) and beam
settings; the settings are timed in turn, ``--rounds`` times (the median is reported: this machine drifts by tens
of percent over minutes). Prints, per search and setting, the batches, output tokens and sentences per second,
and whether every sentence's output is the same as in the first setting (it must be: a sentence never depends
on its batch-mates), and the most a run of it added to the resident memory over the timed rounds (freed heap pages
returned with ``malloc_trim`` and ``VmHWM`` restarted before each run; Linux). ``--profile`` adds ``torch.profiler``'s operator table of the first setting's run of each
search.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import warnings
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import replace
from functools import partial
from pathlib import Path

HERE = Path(__file__).resolve().parent
MAX_LENGTH = {"max_length_ratio": 1.5, "max_length_constant": 1.5}  # as run.py gives both systems


def measure(args: argparse.Namespace) -> tuple[dict, list[dict], dict[str, str]]:
    """The set-up; per (search, budget, refill) its timing and whether its outputs equal the first setting's;
    profiles."""
    sys.path.insert(0, str(HERE))
    import torch

    import seq2seq_side as side
    from harness import pin_threads, reset_peak_rss, status_mib, time_decoding
    from seq2seq.data.batching import PairDataset
    from seq2seq.data.datamodule import eval_loader
    from seq2seq.models.decoding import Decoding, decode_stream
    from seq2seq.training.module import Seq2SeqModule

    pin_threads(args.threads)
    base, datamodule, setup = side.matched_setup(args)
    cfg = side.compose_config(base)
    torch.manual_seed(cfg.seed)
    module = Seq2SeqModule(cfg, datamodule.src_tokenizer, datamodule.tgt_tokenizer)
    update = side.training_update(module, cfg, torch.device("cpu"))
    next_batch = side.training_batches(datamodule)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*self.log.*")
        for _ in range(args.train_updates):
            update(next_batch())
    model = module.model.eval()
    test = PairDataset(datamodule.datasets["test"].examples[: args.sentences])
    searches = {
        "greedy": Decoding("greedy", **MAX_LENGTH),
        "beam": Decoding("beam", beam_size=args.beam_size, length_penalty=args.beam_alpha, **MAX_LENGTH),
    }
    rows, profiles = [], {}
    settings = [
        (budget, refill == "on", copies == "on")
        for budget in args.budget or [2000]
        for refill in args.refill or ["on", "off"]
        for copies in args.copies or ["on"]
    ]
    for kind in args.search or ["greedy", "beam"]:
        # longest first, as the benchmark decodes: with refill the shorter sentences fill the rows around them
        batches = {budget: list(eval_loader(test, budget))[::-1] for budget, *_ in settings}
        outputs: dict[tuple, dict[int, list[int]]] = {setting: {} for setting in settings}
        timings: dict[tuple, list[dict[str, float]]] = {setting: [] for setting in settings}
        growth: dict[tuple, float] = {}

        def search(setting: tuple, decoding: Decoding = searches[kind], batches: dict = batches):
            stream = decode_stream(model, batches[setting[0]], replace(decoding, refill=setting[1]))
            return stream if setting[2] else without_copies(stream)

        def record(searched, into=None) -> list[int]:
            batch, tokens = searched[0], searched[1].tokens
            into.update(zip(batch.indices.tolist(), tokens, strict=True))
            return [len(t) for t in tokens]

        # one untimed run per setting (allocations, code pages), then the settings in turn, round after round:
        # the machine's drift over minutes reaches every setting alike, and the median of the rounds is reported
        for round_ in range(args.rounds + 1):
            for setting in settings:
                base = reset_peak_rss()
                timing = time_decoding(search(setting), partial(record, into=outputs[setting]))
                if round_ > 0:  # (the untimed run also loads code pages and fills caches once)
                    timings[setting].append(timing)
                    if base is not None:  # the most the search added to resident memory, over the rounds
                        growth[setting] = max(growth.get(setting, 0.0), status_mib("VmHWM") - base)
        for setting in settings:
            first, median = timings[setting][0], statistics.median(t["seconds"] for t in timings[setting])
            timing = {
                **first,
                "seconds": median,
                "output_tokens_per_s": first["output_tokens"] / median,
                "sentences_per_s": first["sentences"] / median,
            }  # every round decodes the same sentences into the same tokens
            rows.append({"search": kind, "budget": setting[0], "refill": setting[1], "copies": setting[2], **timing,
                         "batches": len(batches[setting[0]]), "peak_growth_mib": growth.get(setting),
                         "same_outputs": outputs[setting] == outputs[settings[0]]})  # fmt: skip
        if args.profile:
            with torch.profiler.profile() as profiler:
                time_decoding(search(settings[0]), partial(record, into={}))
            profiles[kind] = profiler.key_averages().table(
                sort_by="self_cpu_time_total", row_limit=args.profile
            )
    return {**setup, "sentences": len(test)}, rows, profiles


def without_copies(stream: Iterator) -> Iterator:
    """``stream`` consumed with ``onednn.row_major_copies`` a no-op: the search reads the weights as they are."""
    from seq2seq.models import onednn

    real, onednn.row_major_copies = onednn.row_major_copies, nullcontext
    try:
        yield from stream
    finally:
        onednn.row_major_copies = real


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--corpus", default="data/bible", help="Bible corpus folder; the toy task when it is not built")
    add(
        "--budget",
        type=int,
        action="append",
        help="decoding batch budget in tokens (repeatable; default 2000)",
    )
    add("--search", choices=["greedy", "beam"], action="append", help="repeatable; default both")
    add("--refill", choices=["on", "off"], action="append", help="decoding.refill (repeatable; default both)")
    add("--copies", choices=["on", "off"], action="append", help="row-major copies (repeatable; default on)")
    add("--sentences", type=int, default=500, help="test sentences decoded (default 500, as the benchmark)")
    add("--train-updates", type=int, default=220, help="harness updates before decoding (default 220)")
    add("--beam-size", type=int, default=5)
    add("--beam-alpha", type=float, default=1.0)
    add("--rounds", type=int, default=3, help="timed runs of each budget, in turn (default 3; the median)")
    add("--profile", type=int, nargs="?", const=25, default=0, help="print the top N operators (default 25)")
    add("--threads", type=int, default=2)
    add("--hidden-size", type=int, help="default: the benchmark's match, 288 (Bible) or 304 (toy)")
    add("--target-tokens", type=int, help="real target tokens per update; default 970 (Bible) or 1100 (toy)")
    add("--embedding-size", type=int, default=256, help="as the benchmark's (default 256)")
    add("--extra", action="append", default=[], help="a Hydra override (repeatable)")
    add("--seed", type=int, default=1234)
    add("--work", default="bench/work/decode")
    args = parser.parse_args()
    setup, rows, profiles = measure(args)
    print(
        f"\n{'toy task' if setup['toy'] else 'Bible'}: hidden {setup['hidden']}, {args.train_updates} updates, "
        f"{setup['sentences']} test sentences, {args.threads} threads\n"
    )
    print(
        "| search | budget (tokens) | refill | copies | batches | output tokens/s | sentences/s | mean length "
        "| same outputs | peak memory growth (MiB) |"
    )
    print("|---|---:|---|---|---:|---:|---:|---:|---|---:|")
    for row in rows:
        print(
            f"| {row['search']} | {row['budget']:,} | {'on' if row['refill'] else 'off'} "
            f"| {'on' if row['copies'] else 'off'} | {row['batches']} "
            f"| {row['output_tokens_per_s']:,.0f} "
            f"| {row['sentences_per_s']:.1f} | {row['mean_output_length']:.1f} "
            f"| {'yes' if row['same_outputs'] else 'NO'} "
            f"| {'–' if row['peak_growth_mib'] is None else format(row['peak_growth_mib'], '.1f')} |"
        )
    for kind, table in profiles.items():
        print(
            f"\n{kind}, budget {rows[0]['budget']:,}, refill {'on' if rows[0]['refill'] else 'off'}:\n{table}"
        )


if __name__ == "__main__":
    main()
