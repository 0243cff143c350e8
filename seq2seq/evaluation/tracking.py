"""Experiment tracking: every line of W&B code, and the local CSV history every run keeps.

W&B runs offline unless online is configured, and never blocks or asks for a login. A training or
evaluation job logs through Lightning's :class:`~pytorch_lightning.loggers.WandbLogger` (one W&B run per
job, closed by :func:`finish_wandb` even on failure); the analyses log one standalone run each
(:func:`log_analysis`); the dashboard may save a W&B Report (:func:`create_wandb_report`). ``metrics.csv``
(Lightning's CSVLogger) is written by every run whatever the tracker, so curves can be reviewed offline.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pytorch_lightning.loggers import Logger, WandbLogger

from seq2seq.evaluation.csv_history import RunCSVLogger
from seq2seq.evaluation.record import TAGGED_CHOICES, run_tags

log = logging.getLogger(__name__)

LOGGERS = ("wandb", "csv", "none")
WANDB_MODES = ("offline", "online", "disabled")
LENGTH_COLUMNS = ("bucket", "min_len", "max_len", "n", "bleu", "chrf", "exact_match")


def build_loggers(
    cfg: Any,
    run_dir: Path,
    choices: Mapping[str, str],
    resume: bool = False,
    group: str | None = None,
    name: str | None = None,
    sweep: str | None = None,
) -> list[Logger]:
    """The local CSV history plus the tracker named by ``logger.name``.

    Args:
        cfg: the run config (``logger``, ``model.hidden_size`` and ``tags`` are read).
        resume: the run continues a checkpoint; in a run directory that already has a W&B run, that run
            goes on (same id) rather than a new one starting.
        group, name: the W&B group (the sweep, :func:`seq2seq.config.sweep.sweep_group`) and run name
            (:func:`seq2seq.evaluation.record.run_name`); ``logger.group`` wins over ``group``.
        sweep: the ``sweep=`` config this job came from, tagged ``sweep:<name>``.
    """
    loggers: list[Logger] = [RunCSVLogger(save_dir=str(run_dir), name="", version="")]
    if cfg.logger.name == "wandb":
        os.environ.setdefault("WANDB_SILENT", "true")
        previous = previous_wandb_id(run_dir) if resume else None
        options = dict(
            id=previous,
            resume="allow" if previous else None,
            name=name,
            project=cfg.logger.project,
            entity=cfg.logger.get("entity"),
            group=cfg.logger.get("group") or group,
            job_type=cfg.logger.get("job_type") or "train",
            tags=run_tags(choices, cfg) + ([f"sweep:{sweep}"] if sweep else []),
            save_dir=str(run_dir),
            log_model=False,
        )
        loggers.append(start_wandb(options, cfg.logger.mode, cfg.logger.get("init_timeout") or 30))
    return loggers


def start_wandb(options: dict[str, Any], mode: str, timeout_s: float) -> WandbLogger:
    """A WandbLogger whose run has started; online without an answer within ``timeout_s`` → offline, said.

    W&B's own wait for an unreachable server is 90 s of silence and then an error; a run that cannot reach
    W&B should train anyway and be synced later (``wandb sync``).
    """
    import wandb

    if mode != "online":
        return WandbLogger(mode=mode, **options)
    settings = wandb.Settings(init_timeout=timeout_s)
    why = unreachable(os.environ.get("WANDB_BASE_URL") or settings.base_url, min(timeout_s, 10.0))
    if why is None:
        logger = WandbLogger(mode=mode, settings=settings, **options)
        try:
            logger.experiment  # noqa: B018 - starts the run now, while a failure can still fall back
            return logger
        except Exception as err:
            why = f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:200]}"
            finish_wandb()
    log.warning(
        "W&B online is not reachable (%s); logging offline instead. Upload later with "
        "`wandb sync <run dir>/wandb/offline-run-*`, or set logger.mode=offline to skip this check",
        why,
    )
    return WandbLogger(mode="offline", **options)


def unreachable(url: str, timeout_s: float) -> str | None:
    """Why the W&B server at ``url`` cannot be reached (no name resolution, no connection within
    ``timeout_s``), or None when a TCP connection opens."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname or "", port), timeout=timeout_s).close()
    except OSError as err:
        return f"{parsed.hostname}:{port}: {err.strerror or type(err).__name__}"
    return None


def log_config(
    loggers: Sequence[Logger], config: Mapping[str, Any], choices: Mapping[str, str], params: int
) -> None:
    """The run config, once: its own top-level keys (``model.hidden_size``), the Hydra choices flat under
    ``choices`` (``choices.attention``, ``choices.encoder``: filterable) and the parameter count."""
    flat = {TAGGED_CHOICES.get(group, group): value for group, value in choices.items()}
    for logger in loggers:
        logger.log_hyperparams({"choices": flat, **config, "params": params})


def previous_wandb_id(run_dir: Path) -> str | None:
    """The id of the newest W&B run kept in ``<run_dir>/wandb`` (``[offline-]run-<time>-<id>``), if any."""
    runs = sorted(
        (path for path in (Path(run_dir) / "wandb").glob("*run-*-*") if path.is_dir()),
        key=lambda path: path.name.removeprefix("offline-"),
    )
    return runs[-1].name.rsplit("-", 1)[-1] if runs else None


def finish_wandb() -> None:
    """Close the W&B run of this job, if any, so multirun jobs never leak runs."""
    import wandb

    if wandb.run is not None:
        wandb.finish()


def wandb_loggers(loggers: Sequence[Logger]) -> list[WandbLogger]:
    return [logger for logger in loggers if isinstance(logger, WandbLogger)]


def log_summary(loggers: Sequence[Logger], values: Mapping[str, Any]) -> None:
    """Set the W&B run summary (what the W&B dashboard shows for a finished run)."""
    for logger in wandb_loggers(loggers):
        logger.experiment.summary.update(dict(values))


def log_images(
    loggers: Sequence[Logger],
    key: str,
    paths: Sequence[Path],
    captions: Sequence[str],
    step: int | None = None,
) -> None:
    """Log PNG files as ``wandb.Image``s to every W&B logger (nothing without one), each under
    ``<key>/<file stem>`` so one example's maps form a history across validations."""
    for logger in wandb_loggers(loggers):
        for path, caption in zip(paths, captions, strict=True):
            logger.log_image(key=f"{key}/{Path(path).stem}", images=[str(path)], caption=[caption], step=step)


def log_bleu_by_length(
    loggers: Sequence[Logger], key: str, rows: Sequence[dict[str, Any]], image: Path | None = None
) -> None:
    """Log ``bleu_by_length`` rows to W&B as a table, a line plot (BLEU vs. shortest length in the bucket)
    and, when given, the PNG of :func:`seq2seq.evaluation.plots.plot_bleu_by_length`."""
    targets = wandb_loggers(loggers)
    if not targets or not rows:
        return
    import wandb

    columns = [
        *LENGTH_COLUMNS,
        "bleu_low",
        "bleu_high",
    ]  # the bucket's 95 % bootstrap interval, when resampled
    data = [[*(row.get(c) for c in LENGTH_COLUMNS), *(row.get("bleu_ci") or [None, None])] for row in rows]
    for logger in targets:
        table = wandb.Table(columns=columns, data=data)
        logged: dict[str, Any] = {
            key: table,
            f"{key}_plot": wandb.plot.line(table, "min_len", "bleu", title=f"{key}: BLEU by source length"),
        }
        if image is not None:
            logged[f"{key}_png"] = wandb.Image(str(image))
        logger.experiment.log(logged)


def log_position_accuracy(
    loggers: Sequence[Logger], key: str, curves: Mapping[str, Sequence[float | None]]
) -> None:
    """Token accuracy (%) by output position to W&B: a table (``position`` + one column per curve, e.g.
    ``free-running``, ``teacher-forced``) and a line chart of every curve; positions without data are left out."""
    targets = wandb_loggers(loggers)
    names = [name for name, curve in curves.items() if curve]
    if not targets or not names:
        return
    import wandb

    length = max(len(curves[name]) for name in names)
    data = [
        [position + 1, *(_at(curves[name], position) for name in names)]
        for position in range(length)
        if any(_at(curves[name], position) is not None for name in names)
    ]
    for logger in targets:
        table = wandb.Table(columns=["position", *names], data=data)
        xs = [row[0] for row in data]
        ys = [
            [row[i + 1] if row[i + 1] is not None else float("nan") for row in data]
            for i in range(len(names))
        ]
        logger.experiment.log(
            {
                key: table,
                f"{key}_plot": wandb.plot.line_series(
                    xs,
                    ys,
                    keys=names,
                    title=f"{key}: token accuracy (%) by output position",
                    xname="position",
                ),
            }
        )


def _at(curve: Sequence[float | None], i: int) -> float | None:
    return curve[i] if i < len(curve) else None


def log_analysis(
    logger_cfg: Any,
    out_dir: Path,
    job_type: str,
    config: Mapping[str, Any],
    tables: Mapping[str, tuple[Sequence[str], Sequence[Sequence[Any]]]],
    images: Mapping[str, Path],
    tags: Sequence[str] = (),
    group: str | None = None,
) -> None:
    """One standalone W&B run for an analysis (influence, retention): its config, tables and figures.

    Args:
        tables: key → (columns, rows); images: key → PNG.
    """
    import wandb

    run = wandb.init(
        mode=logger_cfg.mode,
        project=logger_cfg.project,
        entity=logger_cfg.get("entity"),
        group=group,
        job_type=job_type,
        tags=list(tags),
        config=dict(config),
        dir=str(out_dir),
    )
    try:
        logged: dict[str, Any] = {
            key: wandb.Table(columns=list(columns), data=[list(row) for row in rows])
            for key, (columns, rows) in tables.items()
        }
        logged.update({key: wandb.Image(str(png)) for key, png in images.items()})
        run.log(logged)
    finally:
        wandb.finish()


# ------------------------------------------------------------------------------------------ W&B Report


def wandb_report(
    title: str,
    description: str,
    project: str,
    entity: str | None,
    group: str | None = None,
    buckets: Sequence[str] = (),
    colours: Mapping[str, str] | None = None,
) -> Any:
    """The W&B Report of a sweep (package ``wandb-workspaces``), built but not saved: its runs filtered to the
    sweep's ``group`` and drawn in ``colours`` (run id → colour: each variant's colour in every figure); panels of test BLEU per length bucket (``test/bleu_by_length/<bucket>``, one bar group
    per run), ``val/bleu`` and per-bucket ``val/bleu_by_length`` over steps (BLEU axes 0–100), ``train/loss``,
    ``train/lr``, and the test position-accuracy line charts each run logged."""
    import wandb_workspaces.reports.v2 as wr

    runset = wr.Runset(
        entity=entity or "",
        project=project,
        name=group or "all runs",
        filters=f"Group = '{group}'" if group else "",
        custom_run_colors=dict(colours or {}),
    )
    step = "trainer/global_step"
    panels = [
        wr.BarPlot(
            title="test BLEU by source length (words)",
            metrics=[f"test/bleu_by_length/{bucket}" for bucket in buckets] or ["test/bleu"],
            orientation="v",
            range_x=(0, 100),
        ),
        wr.BarPlot(title="test BLEU", metrics=["test/bleu"], range_x=(0, 100)),
        wr.LinePlot(title="val/bleu", x=step, y=["val/bleu"], range_y=(0, 100)),
        wr.LinePlot(
            title="val BLEU by length bucket",
            x=step,
            y=[f"val/bleu_by_length/{bucket}" for bucket in buckets] or ["val/bleu"],
            range_y=(0, 100),
        ),
        wr.LinePlot(title="train/loss", x=step, y=["train/loss"]),
        wr.LinePlot(title="learning rate", x=step, y=["train/lr"]),
        wr.CustomChart(  # the line chart of each run's test/position_accuracy table (log_position_accuracy)
            query={"summaryTable": {"tableKey": "test/position_accuracy"}},
            chart_name="wandb/line/v0",
            chart_fields={"x": "position", "y": "free-running"},
            chart_strings={"title": "free-running token accuracy (%) by output position (test)"},
        ),
    ]
    return wr.Report(
        project=project,
        entity=entity or "",
        title=title,
        description=description,
        blocks=[wr.PanelGrid(runsets=[runset], panels=panels)],
    )


def create_wandb_report(
    title: str,
    description: str,
    project: str | None,
    entity: str | None,
    group: str | None = None,
    buckets: Sequence[str] = (),
    colours: Mapping[str, str] | None = None,
) -> str | None:
    """Save :func:`wandb_report` of a sweep; None without an API key."""
    import wandb

    if not wandb.login(prompt=False, verify=False):
        return None
    project = project or os.environ.get("WANDB_PROJECT") or "seq2seq"
    entity = entity or os.environ.get("WANDB_ENTITY") or wandb.Api().default_entity
    report = wandb_report(title, description, project, entity, group, buckets, colours)
    report.save()
    return report.url


def try_wandb_report(
    title: str,
    description: str,
    project: str | None,
    entity: str | None,
    timeout_s: float,
    group: str | None = None,
    buckets: Sequence[str] = (),
    colours: Mapping[str, str] | None = None,
) -> tuple[str | None, str | None]:
    """:func:`create_wandb_report`, which must never fail or block: ``(url, None)`` or ``(None, why)``.

    Any problem (W&B offline, no key, no network, no package, an API change, no answer within
    ``timeout_s``) is returned as one line.
    """
    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun"):
        return None, None
    outcome: dict[str, Any] = {}

    def create() -> None:
        try:
            outcome["url"] = create_wandb_report(title, description, project, entity, group, buckets, colours)
        except ImportError as err:
            outcome["why"] = f"{err.name} is not installed; pip install wandb-workspaces"
        except Exception as err:  # see the docstring: report and skip, whatever it is
            outcome["why"] = f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]}"

    worker = threading.Thread(target=create, daemon=True)  # a daemon: a hung request cannot hold the exit
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        return None, f"no answer from W&B within {timeout_s:g} s"
    if outcome.get("url") is None and "why" not in outcome:
        return None, "no W&B API key configured"
    return outcome.get("url"), outcome.get("why")
