"""Where a job sits in its sweep: the plan of a Hydra multirun, the W&B group and the job's swept values.

At the start of a multirun, :func:`plan_sweep` counts the jobs the sweeper will launch (Hydra's basic
sweeper: the product of the swept values; Optuna: ``n_trials``) and names the swept keys; the plan is saved as
``<sweep dir>/sweep.json`` (:func:`seq2seq.evaluation.record.write_sweep_plan`) so every job — in this process or a launcher's worker — can
say "job i of N" and name its run after what it varies (:func:`swept_values`). The W&B group of a job is its
sweep directory (:func:`seq2seq.evaluation.record.sweep_group`, saved in the plan), so two launches of one sweep are two groups.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

from seq2seq.evaluation.record import sweep_group


def _overrides(hydra_cfg: DictConfig) -> list[str]:
    """The sweeper's ``params`` then the command line's overrides, as the basic sweeper joins them."""
    params = hydra_cfg.sweeper.get("params") or {}
    return [f"{key}={value}" for key, value in params.items()] + list(hydra_cfg.overrides.task)


def plan_sweep(hydra_cfg: DictConfig) -> dict[str, Any]:
    """``{"planned": N or None, "swept": [keys], "group": W&B group}`` of the multirun that ``hydra_cfg`` (``cfg.hydra``) starts.

    The basic sweeper launches the product of every swept override's values (Optuna: ``n_trials``; another
    sweeper: unknown, None). A key given twice counts once, the later value winning, as in Hydra.
    """
    sweeper = str(hydra_cfg.sweeper.get("_target_", ""))
    overrides = OverridesParser.create().parse_overrides(_overrides(hydra_cfg))
    swept: dict[str, int | None] = {}
    for override in overrides:
        key = override.get_key_element()
        swept.pop(key, None)
        if override.is_sweep_override():
            values = list(override.sweep_string_iterator()) if override.is_discrete_sweep() else None
            swept[key] = len(values) if values is not None else None
    if sweeper.endswith("BasicSweeper"):
        sizes = list(swept.values())
        planned = math.prod(sizes) if None not in sizes else None
    elif "n_trials" in hydra_cfg.sweeper:
        planned = int(hydra_cfg.sweeper.n_trials)
    else:
        planned = None
    return {"planned": planned, "swept": list(swept), "group": sweep_group(hydra_cfg.sweep.dir)}


def swept_values(task_overrides: Sequence[str], swept: Sequence[str]) -> dict[str, str]:
    """This job's value of every swept key, from its own overrides (``hydra.overrides.task``)."""
    values = {}
    for override in OverridesParser.create().parse_overrides(list(task_overrides)):
        key = override.get_key_element()
        if key in swept:
            values[key] = override.get_value_element_as_str()
    return values
