"""An older revision's code of some modules, swapped in and out of the running process (``lever_times.py --before``).

A code change without a config switch is timed before and after in two processes, and one process's speed differs
from the next one's by more than most changes (``docs/performance.md``). :class:`CodeVersions` loads the named
modules' source as it was at a git revision into module objects of their own, and :meth:`CodeVersions.use` puts
that revision's functions into the live modules and classes (or takes them out again), so two models in one
process can be updated in turn on the same batch, one with each version of the code.

What is swapped: each module-level function, and each function, static or class method and property of each
class defined in the module, whose code differs from the revision's one of that name (a method only the current
code has is removed while the old code is in use; comments and moved lines change nothing; a decorated function
is compared by the function it wraps). Old functions run with the old module's globals, so they call the old
versions of its helpers and classes; a zero-argument ``super()`` in an old method refers to the live class. Not
swapped: constants, and functions other modules imported by name (``from m import f`` binds ``f`` at import);
objects are not rebuilt, so an instance created before the swap keeps its attributes.
"""

from __future__ import annotations

import importlib
import subprocess
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
_MISSING = object()
_SWAPPABLE = (types.FunctionType, staticmethod, classmethod, property)


class RevisionError(ValueError):
    """A revision or module that cannot be read: names the revision, the path and what git said."""


class CodeVersions:
    """The modules ``names`` (dotted, importable) at git ``revision`` of the repository at ``root``."""

    def __init__(self, revision: str, names: list[str], root: Path = ROOT) -> None:
        self._swaps: list[tuple[Any, str, Any, Any]] = []  # (owner, attribute, current value, old value)
        self._old_in_use = False
        for name in names:
            current = importlib.import_module(name)
            path = Path(current.__file__).resolve().relative_to(root.resolve())
            old = types.ModuleType(name)  # its own namespace: the old functions' globals
            old.__file__ = str(root / path)
            source = compile(
                _show(root, revision, path), f"{revision}:{path}", "exec", dont_inherit=True
            )  # its own futures
            exec(source, old.__dict__)
            self._swaps += _pairs(current, old)

    def use(self, old: bool) -> None:
        """Put the revision's functions in place (``old``), or the current ones back."""
        if old == self._old_in_use:
            return
        for owner, attribute, current, previous in self._swaps:
            value = previous if old else current
            if value is _MISSING:
                delattr(owner, attribute)
            else:
                setattr(owner, attribute, value)
        self._old_in_use = old

    @property
    def swapped(self) -> list[str]:
        """``module.attribute`` or ``module.Class.attribute`` of every swapped name."""
        return [
            f"{owner.__name__}.{attribute}" if isinstance(owner, types.ModuleType)
            else f"{owner.__module__}.{owner.__qualname__}.{attribute}"
            for owner, attribute, _, _ in self._swaps
        ]  # fmt: skip


def _show(root: Path, revision: str, path: Path) -> str:
    shown = subprocess.run(
        ["git", "-C", str(root), "show", f"{revision}:{path.as_posix()}"], capture_output=True, text=True
    )
    if shown.returncode != 0:
        raise RevisionError(
            f"--before {revision}: cannot read {path} at that revision ({shown.stderr.strip()}); "
            "name a commit that has the module"
        )
    return shown.stdout


def _pairs(current: types.ModuleType, old: types.ModuleType) -> list[tuple[Any, str, Any, Any]]:
    """What to swap between the live module ``current`` and its old copy ``old``."""
    pairs = []
    for attribute, value in vars(current).items():
        before = vars(old).get(attribute, _MISSING)
        if isinstance(value, types.FunctionType) and value.__module__ == current.__name__:
            if isinstance(before, types.FunctionType) and _differs(value, before):
                pairs.append((current, attribute, value, before))
        elif isinstance(value, type) and value.__module__ == current.__name__ and isinstance(before, type):
            members = {k for k, v in vars(value).items() if isinstance(v, _SWAPPABLE)}
            members |= {k for k, v in vars(before).items() if isinstance(v, _SWAPPABLE)}
            for member in sorted(members):
                now, previous = vars(value).get(member, _MISSING), vars(before).get(member, _MISSING)
                if _differs(now, previous):
                    pairs.append((value, member, now, _rebound(previous, value)))
    return pairs


def _differs(now: Any, previous: Any) -> bool:
    """Whether two versions of a function, method or property differ in their code (comments and moved lines
    do not count, a nested function's moved lines do)."""
    if now is _MISSING or previous is _MISSING or type(now) is not type(previous):
        return True
    if isinstance(now, property):
        return any(_differs(a, b) for a, b in zip(_accessors(now), _accessors(previous), strict=True))
    if isinstance(now, (staticmethod, classmethod)):
        now, previous = now.__func__, previous.__func__
    if now is None or previous is None:
        return now is not previous
    a, b = now.__code__, previous.__code__
    if any(getattr(a, k) != getattr(b, k) for k in ("co_code", "co_consts", "co_names", "co_varnames")):
        return True
    # a decorator's wrapper is the same code around a different function: compare what it closes over
    cells = zip(a.co_freevars, now.__closure__ or (), previous.__closure__ or (), strict=True)
    return any(
        _differs(x.cell_contents, y.cell_contents)
        for free, x, y in cells
        if free != "__class__" and isinstance(x.cell_contents, types.FunctionType)
    )


def _accessors(p: property) -> tuple[Any, Any, Any]:
    return p.fget, p.fset, p.fdel


def _rebound(member: Any, cls: type) -> Any:
    """An old class's method made to run on the live class ``cls``: a zero-argument ``super()`` reads the
    ``__class__`` cell, which would otherwise name the old class, of which the live instances are not."""
    if isinstance(member, (staticmethod, classmethod)):
        return type(member)(_rebound(member.__func__, cls))
    if not isinstance(member, types.FunctionType) or "__class__" not in member.__code__.co_freevars:
        return member
    cells = [
        types.CellType(cls) if free == "__class__" else cell
        for free, cell in zip(member.__code__.co_freevars, member.__closure__ or (), strict=True)
    ]
    rebound = types.FunctionType(
        member.__code__, member.__globals__, member.__name__, member.__defaults__, tuple(cells)
    )
    rebound.__kwdefaults__, rebound.__qualname__ = member.__kwdefaults__, member.__qualname__
    return rebound
