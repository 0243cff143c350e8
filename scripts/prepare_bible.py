"""Build the Bible English–Spanish corpus (KJV → Reina-Valera 1909) under ``data/bible/``.

    python scripts/prepare_bible.py [--out data/bible] [--sword-path /usr/share/sword]
                                    [--val-fraction 0.05] [--test-fraction 0.05] [--seed 1234] [--force]

Reads the SWORD modules of the Debian packages ``sword-text-kjv`` and ``sword-text-sparv`` (installed
here when run as root, otherwise the command to run is printed), aligns the verses, splits them by
chapter and writes ``{train,val,test}.{en,es,ref}`` and ``stats.json``. A second run with the same
settings does nothing (``--force`` rebuilds). The work is in ``seq2seq.data.bible``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from seq2seq.data import bible
from seq2seq.data.errors import DataError

console = Console()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="data/bible", help="output folder (default: data/bible)")
    parser.add_argument(
        "--sword-path", default=bible.DEFAULT_SWORD_PATH, help="SWORD library holding mods.d/ and modules/"
    )
    parser.add_argument(
        "--val-fraction", type=float, default=0.05, help="share of verses in val (whole chapters)"
    )
    parser.add_argument(
        "--test-fraction", type=float, default=0.05, help="share of verses in test (whole chapters)"
    )
    parser.add_argument("--seed", type=int, default=1234, help="seed of the chapter shuffle")
    parser.add_argument("--en-module", default=bible.EN_MODULE, help="SWORD module of the source side")
    parser.add_argument("--es-module", default=bible.ES_MODULE, help="SWORD module of the target side")
    parser.add_argument("--force", action="store_true", help="rebuild even if the corpus is up to date")
    return parser.parse_args(argv)


def _missing_modules(sword_path: str, modules: list[str]) -> list[str]:
    conf_dir = Path(sword_path) / "mods.d"
    confs = (
        " ".join(p.read_text(errors="replace") for p in conf_dir.glob("*.conf")) if conf_dir.is_dir() else ""
    )
    return [module for module in modules if f"[{module}]" not in confs]


def ensure_modules(sword_path: str, modules: list[str]) -> None:
    """Install the Debian packages of missing modules when root; otherwise exit with the command to run."""
    missing = _missing_modules(sword_path, modules)
    if not missing:
        return
    packages = [bible.DEBIAN_PACKAGES[m] for m in missing if m in bible.DEBIAN_PACKAGES]
    command = f"apt-get install -y {' '.join(packages)}"
    where = f"SWORD module(s) {', '.join(missing)} not found under {sword_path}/mods.d"
    if len(packages) < len(missing) or sword_path != bible.DEFAULT_SWORD_PATH:
        sys.exit(
            f"{where}. Install them into {sword_path}, or use the Debian packages with --sword-path "
            f"{bible.DEFAULT_SWORD_PATH}."
        )
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        sys.exit(f"{where}. Install them with:\n  sudo {command}\nthen run `make data-bible` again.")
    console.print(f"{where}; installing: [bold]{command}[/bold]")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(command.split(), env=env).returncode != 0:
        console.print("install failed; refreshing the package lists (apt-get update) and trying again")
        subprocess.run(["apt-get", "update"], env=env, check=False)
        if subprocess.run(command.split(), env=env).returncode != 0:
            sys.exit(f"`{command}` failed; see the apt output above.")
    still_missing = _missing_modules(sword_path, modules)
    if still_missing:
        sys.exit(
            f"installed {' '.join(packages)} but {', '.join(still_missing)} is still not in {sword_path}/mods.d"
        )


def read_both(args: argparse.Namespace) -> tuple[dict, dict]:
    """Raw OSIS verses of both modules, with a progress bar over the books."""
    with Progress(console=console, transient=True) as progress:
        modules = (args.en_module, args.es_module)
        total = sum(len(bible.list_books(m, args.sword_path)) for m in modules)
        task = progress.add_task("reading SWORD modules", total=total)
        raw = {}
        for module in modules:
            progress.update(task, description=f"reading {module}")
            raw[module] = bible.read_osis(module, args.sword_path, on_book=lambda _: progress.advance(task))
    return raw[args.en_module], raw[args.es_module]


def print_summary(stats: dict, out: Path) -> None:
    dropped = ", ".join(f"{reason} {n}" for reason, n in stats["dropped"].items())
    console.print(
        f"kept {stats['aligned_pairs']} verse pairs; dropped {sum(stats['dropped'].values())} ({dropped})"
    )
    splits = stats["splits"]
    table = Table(title=f"Bible en→es corpus in {out}")
    table.add_column("")
    for split in splits:
        table.add_column(split, justify="right")
    rows = [
        ("pairs", "pairs"),
        ("chapters", "chapters"),
        ("source words", "source_words"),
        ("target words", "target_words"),
    ]
    for label, key in rows:
        table.add_row(label, *(f"{splits[s][key]:,}" for s in splits))
    for bucket in splits["train"]["source_length_histogram"]:
        table.add_row(
            f"  len {bucket}", *(f"{splits[s]['source_length_histogram'][bucket]:,}" for s in splits)
        )
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    settings = {
        "format": bible.CORPUS_FORMAT,
        "en_module": args.en_module,
        "es_module": args.es_module,
        "val_fraction": args.val_fraction,
        "test_fraction": args.test_fraction,
        "seed": args.seed,
        "misalign_window": bible.MISALIGN_WINDOW,
        "misalign_margin": bible.MISALIGN_MARGIN,
    }
    if not args.force and bible.corpus_is_current(out, settings):
        console.print(
            f"{out} is up to date with these settings (see {out / 'stats.json'}); --force rebuilds it"
        )
        return 0
    try:
        import pysword  # noqa: F401
    except ImportError:
        sys.exit("pysword is not installed; run `.venv/bin/pip install pysword` (or `make setup`)")
    ensure_modules(args.sword_path, [args.en_module, args.es_module])
    try:
        en_osis, es_osis = read_both(args)
        misaligned = bible.find_misaligned(
            {ref: bible.strongs_numbers(v) for ref, v in en_osis.items()},
            {ref: bible.strongs_numbers(v) for ref, v in es_osis.items()},
        )
        en = {ref: bible.osis_to_text(v) for ref, v in en_osis.items()}
        es = {ref: bible.osis_to_text(v) for ref, v in es_osis.items()}
        pairs, dropped = bible.align_verses(en, es, misaligned)
        splits = bible.split_by_chapter(pairs, args.val_fraction, args.test_fraction, args.seed)
        metadata = {
            "settings": settings,
            "sources": {m: bible.module_info(m, args.sword_path) for m in (args.en_module, args.es_module)},
            "verses_read": {"en": len(en), "es": len(es)},
            "aligned_pairs": len(pairs),
            "dropped": dropped,
        }
        stats = bible.write_corpus(splits, out, metadata)
    except DataError as err:
        sys.exit(f"error: {err}")
    print_summary(stats, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
