"""``metrics.csv`` in a run directory: Lightning's CSVLogger, warning only when it replaces a history.

Lightning's writer warns "Experiment logs directory … exists and is not empty. Previous log files in this
directory will be deleted" whenever its directory holds any file — and a run directory always does
(``.hydra/``, checkpoints, ``results.json``), none of which it deletes. :class:`RunCSVLogger` says so only
when a ``metrics.csv`` is really about to be replaced (a new run started in an old run's directory; a
resumed run sets its history aside first, :mod:`seq2seq.training.resume`).
"""

from __future__ import annotations

from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment
from pytorch_lightning.utilities import rank_zero_warn


class RunDirWriter(ExperimentWriter):
    """Lightning's CSV writer, with a warning that is true: only an existing ``metrics.csv`` is replaced."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            rank_zero_warn(f"{self.metrics_file_path} exists and is replaced by this run's history")
            self._fs.rm_file(self.metrics_file_path)


class RunCSVLogger(CSVLogger):
    """``CSVLogger(save_dir=run_dir, name="", version="")`` writing ``<run_dir>/metrics.csv`` through
    :class:`RunDirWriter`."""

    @property
    @rank_zero_experiment
    def experiment(self) -> RunDirWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = RunDirWriter(log_dir=self.log_dir)
        return self._experiment
