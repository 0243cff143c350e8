"""Each speed lever's before and after, timed: the benchmark's training update with and without it, paired.

    .venv/bin/python scripts/benchmark/lever_times.py [--corpus data/bible] [--updates 60] \\
        [--setting "LABEL: OVERRIDE ..."]...

The model, data and loop are the benchmark's (``seq2seq_side.py``: bi-GRU encoder, GRU decoder with Bahdanau
attention and input feeding, the data module's token-budget batches, ``training_step`` → backward → clipping →
Adam; the Bible set-up, or the toy task when ``--corpus`` holds no Bible), with the hidden size and batch budget
the benchmark matched to JoeyNMT (``--hidden-size``, ``--target-tokens``). Each setting is a set of Hydra
overrides of the ``speed`` options (by default: all levers on, then each lever off in turn, then all off). One
model per setting, all from the same seed, live in one process, and every batch updates each of them in turn
(the order rotating from batch to batch), so each update has a partner on the same batch a moment apart. A
shared machine drifts by tens of percent over minutes; the paired ratio of each setting's update time to the
first setting's on the same batch does not. Prints, per setting, the median seconds per update, target tokens per
second, and the median paired ratio to the first setting. Run it on a quiet machine all the same.
``speed.keep_freed_memory`` acts on the whole process, so it cannot be paired: it is on for every setting unless
``--extra speed.keep_freed_memory=false``; compare it across alternated runs instead. ``--profile N`` then runs
10 more updates of the first setting under ``torch.profiler`` and prints its top ``N`` operators. The last
column is what autograd keeps for the backward of one update (an extra, untimed update before the warm-up): the
distinct storages its saved-tensor hook sees, the parameters left out.

A code change without a switch: ``--before REV --module seq2seq.models.x`` adds a setting, last, whose model is
built and updated with the first setting's config and the named modules' code as at git revision ``REV``
(``code_versions.py``), paired on the same batches like the others.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_SETTINGS = [
    "all levers on:",
    "without step weights: speed.step_weights=false",
    "without fused step: speed.fused_step=false",
    "without step attention: speed.step_attention=false",
    "without recomputed attention gates: speed.recompute_attention=false",
    "without compiled kernels: speed.compiled_kernels=false",
    "without tanh as sigmoid: speed.tanh_as_sigmoid=false",
    "without fused Adam: speed.fused_optimizer=false",
    "without chunked loss: speed.loss_chunk=0",
    "without fast unroll: speed.fast_unroll=false",
    "without GRU kernel: speed.gru_kernel=false",
    "all off: speed.fast_unroll=false speed.loss_chunk=0 speed.fused_optimizer=false speed.tanh_as_sigmoid=false"
    " speed.gru_kernel=false",
]


def measure(
    args: argparse.Namespace, settings: list[tuple[str, list[str]]]
) -> tuple[dict, list[tuple[str, list[str]]], list[dict]]:
    """The set-up, the settings (``--before`` adds one), and per setting its update times and paired ratios to the
    first setting."""
    sys.path.insert(0, str(HERE))
    import torch

    import seq2seq_side as side
    from harness import pin_threads, synchronize
    from seq2seq.training.module import Seq2SeqModule

    pin_threads(args.threads)
    versions = None
    if args.before:  # the last setting: the first one's config with the modules' code at that revision
        from code_versions import CodeVersions, RevisionError

        try:
            versions = CodeVersions(args.before, args.module)
        except RevisionError as error:
            raise SystemExit(str(error)) from None
        settings = [*settings, (f"at {args.before}", settings[0][1])]
    old_code = len(settings) - 1 if versions else None

    def use_code(index: int) -> None:
        if versions:
            versions.use(index == old_code)

    # keep_freed_memory is process-wide: alike for every setting
    base, datamodule, setup = side.matched_setup(args)

    updates, modules = [], []
    for index, (_, overrides) in enumerate(settings):
        use_code(index)  # each model built with its own setting's code too
        cfg = side.compose_config(base + overrides)
        torch.manual_seed(cfg.seed)
        module = Seq2SeqModule(cfg, datamodule.src_tokenizer, datamodule.tgt_tokenizer)
        updates.append(side.training_update(module, cfg, torch.device("cpu")))
        modules.append(module)
        setup.setdefault("attention", cfg.model.attention.name)  # the first setting's (--extra may change it)

    next_batch = side.training_batches(datamodule)
    seconds: list[list[float]] = [[] for _ in settings]
    faults = [0] * len(settings)  # minor page faults during the timed updates (first touches of fresh pages)
    first = next_batch()  # one more untimed update each, that counts what autograd keeps for its backward
    kept = []
    for index, (run, module) in enumerate(zip(updates, modules, strict=True)):
        use_code(index)
        kept.append(saved_for_backward_mib(run, first, module))
    tokens = 0
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*self.log.*")
        for step in range(args.warmup + args.updates):
            batch = next_batch()
            order = [(step + i) % len(settings) for i in range(len(settings))]  # rotate who goes first
            for index in order:
                use_code(index)
                synchronize()
                faulted = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                start = time.perf_counter()
                updates[index](batch)
                synchronize()
                if step >= args.warmup:
                    seconds[index].append(time.perf_counter() - start)
                    faults[index] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faulted
            if step >= args.warmup:
                tokens += side.shape_of(batch).tgt_tokens
    rows = [
        {
            "median_s": statistics.median(own),
            "tgt_tokens_per_s": tokens / sum(own),
            "paired_ratio": statistics.median(a / b for a, b in zip(own, seconds[0], strict=True)),
            "page_faults": count / len(own),
            "saved_mib": saved,
        }
        for own, count, saved in zip(seconds, faults, kept, strict=True)
    ]
    use_code(0)
    setup["profile"], setup["swapped"] = None, versions.swapped if versions else []
    if args.profile:
        with torch.profiler.profile() as profiler, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*self.log.*")
            for _ in range(10):
                updates[0](next_batch())
        table = profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile)
        setup["profile"] = table
    return setup, settings, rows


def saved_for_backward_mib(update: Any, batch: Any, module: Any) -> float:
    """Run ``update(batch)``; the MiB of the distinct storages autograd saved for its backward, parameters left out.

    All of them are alive at once: the forward pass packs them and only the backward frees them.
    """
    import torch

    parameters = {p.untyped_storage().data_ptr() for p in module.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor: Any) -> Any:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        update(batch)
    return sum(storages.values()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--corpus", default="data/bible", help="Bible corpus folder; the toy task when it is not built")
    add(
        "--setting",
        action="append",
        help='"LABEL: OVERRIDE ..." (repeatable; default: each lever off in turn)',
    )
    add("--updates", type=int, default=60, help="timed updates of each setting, one per batch")
    add("--warmup", type=int, default=10)
    add("--threads", type=int, default=2)
    add("--hidden-size", type=int, help="default: the benchmark's match, 288 (Bible) or 304 (toy)")
    add("--target-tokens", type=int, help="real target tokens per update; default 970 (Bible) or 1100 (toy)")
    add("--embedding-size", type=int, default=256, help="as the benchmark's (default 256)")
    add(
        "--attention",
        choices=["bahdanau", "luong_concat"],
        default="bahdanau",
        help="the model's attention: bahdanau (the throughput benchmark's) or luong_concat (the time-to-BLEU run's)",
    )
    add("--extra", action="append", default=[], help="a Hydra override for every setting (repeatable)")
    add(
        "--before",
        metavar="REV",
        help="add a setting: the first one's, with --module's code at this git revision",
    )
    add("--module", action="append", default=[], help="with --before: a module to take from REV (repeatable)")
    add("--profile", type=int, nargs="?", const=25, default=0, help="top N operators of 10 more updates")
    add("--seed", type=int, default=1234)
    add("--work", default="bench/work/levers")
    args = parser.parse_args()
    if bool(args.before) != bool(args.module):
        parser.error("--before and --module go together: the revision, and the modules to take from it")
    settings = [_label_and_overrides(text) for text in (args.setting or DEFAULT_SETTINGS)]
    setup, settings, rows = measure(args, settings)
    print(
        f"\n{'toy task' if setup['toy'] else 'Bible'}, {setup['attention']}: hidden {setup['hidden']}, "
        f"max_tokens {setup['max_tokens']}, "
        f"{args.threads} threads, {args.updates} timed updates of each setting after {args.warmup}, interleaved\n"
    )
    print(
        f"| setting | median s/update | target tokens/s | paired time ratio to “{settings[0][0]}” "
        "| page faults/update | saved for backward (MiB) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for (label, _), row in zip(settings, rows, strict=True):
        print(
            f"| {label} | {row['median_s']:.3f} | {row['tgt_tokens_per_s']:,.0f} | {row['paired_ratio']:.2f} "
            f"| {row['page_faults']:,.0f} | {row['saved_mib']:.2f} |"
        )
    if setup["swapped"]:
        print(f"\nat {args.before}: {', '.join(setup['swapped'])}")
    if setup["profile"]:
        print(f"\n{settings[0][0]}: 10 updates, by operator\n{setup['profile']}")


def _label_and_overrides(text: str) -> tuple[str, list[str]]:
    """``LABEL: OVERRIDE ...`` → the label and the Hydra overrides."""
    label, sep, rest = text.partition(":")
    if not sep:
        raise SystemExit(f"--setting {text!r}: expected 'LABEL: OVERRIDE ...' (a colon after the label)")
    return label.strip(), rest.split()


if __name__ == "__main__":
    main()
