"""The dashboard's former name: ``python -m seq2seq.report`` runs ``seq2seq-dashboard`` (seq2seq.dashboard)."""

from seq2seq.dashboard.cli import run

if __name__ == "__main__":
    run()
