"""``python -m seq2seq.dashboard sweep_dir=DIR [out_dir=DIR]``."""

from seq2seq.dashboard.cli import run

run()
