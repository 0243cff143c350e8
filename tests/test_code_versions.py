"""scripts/benchmark/code_versions.py: an older revision's functions swapped into the live modules and back."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts" / "benchmark"))
from code_versions import CodeVersions, RevisionError  # noqa: E402

MODULE = """
import functools

def helper():
    return "{tag} helper"

def uses_helper():
    return helper()

def wrap(f):
    @functools.wraps(f)
    def wrapper(*args):
        return f(*args)
    return wrapper

class Base:
    def who(self):
        return "base"

class Thing(Base):
    LIMIT = {value}

    def value(self):
        return {value}

    def who(self):
        return "{tag} " + super().who()

    @staticmethod
    @wrap
    def wrapped():
        return "{tag} wrapped"
{comment}
    def same(self):
        return "same"
{extra}"""
# the two revisions: what differs is named; `same` moves down a line behind a comment, and only the new one has
# `only_new`
OLD = MODULE.format(tag="old", value=1, comment="", extra="")
NEW = MODULE.format(
    tag="new",
    value=2,
    comment="    # a comment, and the method below moved down by a line: the same code\n",
    extra='\n    def only_new(self):\n        return "only new"\n',
)


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True)


@pytest.fixture
def two_revisions(tmp_path, monkeypatch):
    """A repository whose ``cvpkg/mod.py`` was OLD at HEAD~1 and is NEW at HEAD, imported from its work tree."""
    package = tmp_path / "cvpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    _git(tmp_path, "init", "-q")
    for source in (OLD, NEW):
        (package / "mod.py").write_text(textwrap.dedent(source))
        _git(tmp_path, "add", "cvpkg")
        _git(tmp_path, "commit", "-qm", "a revision")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("cvpkg", "cvpkg.mod"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import cvpkg.mod as mod

    return tmp_path, mod


def test_the_revisions_functions_are_swapped_in_and_out(two_revisions):
    root, mod = two_revisions
    thing = mod.Thing()  # made before the swap: its methods are looked up on the class
    versions = CodeVersions("HEAD~1", ["cvpkg.mod"], root=root)
    assert sorted(versions.swapped) == [
        "cvpkg.mod.Thing.only_new",
        "cvpkg.mod.Thing.value",
        "cvpkg.mod.Thing.who",
        "cvpkg.mod.Thing.wrapped",
        "cvpkg.mod.helper",
    ]  # not `same` (a comment and moved lines), not `uses_helper`, `wrap` or `Base` (unchanged)

    versions.use(True)
    assert thing.value() == 1 and mod.Thing().value() == 1
    assert thing.who() == "old base"  # the old method's super() works on the live class
    assert mod.Thing.wrapped() == "old wrapped"  # compared and swapped by the function inside the wrapper
    assert mod.helper() == "old helper"
    assert not hasattr(thing, "only_new")  # the current code's own method is gone while the old code runs
    assert mod.Thing.LIMIT == 2  # constants stay

    versions.use(False)
    assert (thing.value(), thing.who(), mod.Thing.wrapped(), mod.helper()) == (
        2,
        "new base",
        "new wrapped",
        "new helper",
    )
    assert thing.only_new() == "only new"


def test_a_revision_without_the_module_is_named(two_revisions):
    root, _ = two_revisions
    with pytest.raises(
        RevisionError, match=r"--before nosuchrev: cannot read cvpkg/mod\.py at that revision"
    ):
        CodeVersions("nosuchrev", ["cvpkg.mod"], root=root)
