"""Read an offline W&B run back as W&B writes it: the ``run-<id>.wandb`` file, record by record.

The file is a LevelDB-style log (a 7-byte header ``:W&B`` + magic + version, then 32 KiB blocks of records,
each ``crc32c:u32 length:u16 type:u8`` + data, long records split FIRST/MIDDLE/LAST); every record is a
``wandb.proto.wandb_internal_pb2.Record``. wandb ≥ 0.19 writes the file from its Go core and ships no Python
reader, so the tests frame the records here and parse each one with wandb's own protobuf classes.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2

BLOCK = 32768
HEADER = 7  # both the file header and each record's header
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list[wandb_internal_pb2.Record]:
    """Every record of a ``.wandb`` file, in order."""
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    out, pending, pos = [], b"", HEADER
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # the block's tail is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == 0 and length == 0:
            pos += BLOCK - pos % BLOCK if pos % BLOCK else 0
            continue
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            out.append(record)
            pending = b""
    return out


def _key(item: Any) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


@dataclass
class OfflineRun:
    """What the W&B app would show of one offline run after ``wandb sync``."""

    name: str
    group: str
    job_type: str
    config: dict[str, Any]
    tags: list[str] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)  # one dict per logged step, with "_step"
    summary: dict[str, Any] = field(default_factory=dict)


def read_run(run_dir: Path) -> OfflineRun:
    """``<...>/wandb/offline-run-*`` → its run settings, config, history rows and summary."""
    (path,) = Path(run_dir).glob("run-*.wandb")
    run: OfflineRun | None = None
    config: dict[str, Any] = {}
    history, summary = [], {}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = OfflineRun(
                record.run.display_name,
                record.run.run_group,
                record.run.job_type,
                config,
                list(record.run.tags),
            )
            for item in record.run.config.update:
                config[_key(item)] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                config[_key(item)] = json.loads(item.value_json)
        elif kind == "history":
            history.append({_key(item): json.loads(item.value_json) for item in record.history.item})
        elif kind == "summary":
            for item in record.summary.update:
                summary[_key(item)] = json.loads(item.value_json)
    assert run is not None, f"{path} has no run record"
    run.history, run.summary = history, summary
    return run
