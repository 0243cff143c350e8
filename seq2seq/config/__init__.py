"""The run config: where its YAML lives (:data:`CONF_DIR`), its types (``schema``) and its checks (``checks``)."""

from pathlib import Path

# conf/ beside the package; absolute, so the entry points find it however they are started
# (``python -m seq2seq.train``, the ``seq2seq-train`` console script, or from another directory)
CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")
