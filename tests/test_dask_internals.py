"""The private Dask interfaces dask_regions relies on (dask_regions/internals.py): each has a check that fails
after an upgrade that changes it, naming the internal and the versions it was written against."""

from __future__ import annotations

import pytest

from dask_regions import internals


@pytest.mark.parametrize("name", sorted(internals.CHECKS))
def test_each_internal_is_as_written_against(name: str) -> None:
    assert internals.problem(name) is None, internals.problem(name)


def test_the_pins_are_the_installed_versions() -> None:
    assert internals.installed_versions() == internals.PINNED, (
        "requirements.txt and dask_regions/internals.py PINNED disagree: check every internal, then update PINNED")


def test_a_changed_internal_is_named_with_the_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    from distributed.scheduler import Scheduler

    monkeypatch.setattr(Scheduler, "_get_prefix_duration", lambda self, prefix, extra: 0.0)
    message = internals.problem("Scheduler._get_prefix_duration")
    assert message is not None
    assert "Dask internal 'Scheduler._get_prefix_duration' changed" in message
    assert "written against dask 2026.8.0, distributed 2026.8.0" in message and "installed: dask" in message
    assert message in internals.problems()


def test_a_changed_task_spec_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from dask._task_spec import Task

    monkeypatch.delattr(Task, "has_subgraph")
    assert "Dask internal 'dask._task_spec' changed" in (internals.problem("dask._task_spec") or "")


def test_spec_values_reach_into_fused_subgraphs() -> None:
    from dask._task_spec import DataNode, Task, _execute_subgraph

    marker = object()
    inner = {"read": Task("read", len, DataNode(None, marker))}
    fused = Task("fused", _execute_subgraph, DataNode(None, inner), "read", ())
    assert marker in list(internals.spec_values(fused))
