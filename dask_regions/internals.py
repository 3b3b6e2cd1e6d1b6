"""Every private Dask interface (and xarray's experimental chunk-manager API) that dask_regions relies on, in one
place, each with a check that says when an upgrade has changed it.

Why each is needed:
- `dask._task_spec` (Task, DataNode, fused subgraphs): the router finds the region tags inside a task's spec,
  also after low-level fusion has folded a region's array node into its reader.
- `Scheduler._transition` / `_transitions` / `send_all`: failing a task with our own error (the public
  `transitions()` carries no exception).
- `Scheduler._get_prefix_duration`: Dask's own measured duration per task prefix, for the demand figure.
- `RetireWorker.run` and `Suggestion`: graceful retirement copies data to any worker; we narrow the candidates to
  the retiring worker's own pool.
- `distributed.shuffle`'s `shuffle_get_or_create` handler, `barrier_key` and `_calculate_worker_for`: P2P pins its
  output tasks to workers it picks among the barrier task's worker restrictions (all workers without) when the
  first worker asks for the shuffle; the router restricts the barrier to its pool's live workers just before,
  so that every output of a region's shuffle stays in it. `ShuffleRun._send(address, shards)`: P2P sends its
  shards worker to worker outside the task graph (Dask's transfer log does not see them); the audit counts them.
- `Client._graph_to_futures(expr, keys, ...)`: every graph a client sends (compute, persist, get, submit) passes
  through it; the crossing budget (dask_regions.budget) checks the graph just before, so a refused graph is
  never sent.
- xarray's `DaskManager` (a `ChunkManagerEntrypoint`, marked experimental by xarray): chunking a dataset through
  our subclass wraps each file-backed array in a `RegionalArray`, so the region travels with the data.

`problems()` lists what no longer matches; tests/test_dask_internals.py fails with that list after an upgrade.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from dask._task_spec import DataNode, GraphNode, Task, TaskRef
from distributed.active_memory_manager import RetireWorker, Suggestion
from distributed.client import Client
from distributed.scheduler import Scheduler, TaskPrefix, TaskState
from distributed.shuffle._core import ShuffleRun, barrier_key
from distributed.shuffle._scheduler_plugin import ShuffleSchedulerPlugin
from xarray.core.indexing import ImplicitToExplicitIndexingAdapter
from xarray.namedarray.daskmanager import DaskManager

# The versions these internals were written against (requirements.txt pins the same).
PINNED = {"dask": "2026.8.0", "distributed": "2026.8.0", "xarray": "2026.9.0"}
MAX_SPEC_OBJECTS = 10_000  # a task spec is walked this far at most (a fused chain is tens of nodes)


# ------------------------------------------------------------------------------------------ task specs
def spec_values(spec: object) -> Iterator[object]:
    """Every value held in a task spec: DataNode values, Task arguments, and the nodes of fused subgraphs, at any
    depth (bounded). Arrays are yielded, never iterated."""
    stack, seen, count = [spec], set(), 0
    while stack and count < MAX_SPEC_OBJECTS:
        item = stack.pop()
        if id(item) in seen or item is None or isinstance(item, str | bytes | int | float | np.ndarray | TaskRef):
            continue
        seen.add(id(item))
        count += 1
        yield item
        if isinstance(item, DataNode):
            stack.append(item.value)
        elif isinstance(item, Task):
            stack.extend(item.args)
            stack.extend(item.kwargs.values())
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset) and len(item) <= MAX_SPEC_OBJECTS:
            stack.extend(item)


# ------------------------------------------------------------------------------------------ the scheduler
def fail_task(scheduler: Scheduler, key: Any, error: BaseException, stimulus: str) -> None:
    """Move a task to `erred` with `error`, as the scheduler's own `stimulus_task_erred` does."""
    from distributed.core import error_message

    message = error_message(error)
    recommendations, client_msgs, worker_msgs = scheduler._transition(
        key, "erred", stimulus, cause=key, exception=message["exception"], traceback=message["traceback"],
        exception_text=message["exception_text"], traceback_text=message["traceback_text"])
    scheduler._transitions(recommendations, client_msgs, worker_msgs, stimulus)
    scheduler.send_all(client_msgs, worker_msgs)


SHUFFLE_CREATE_HANDLER = "shuffle_get_or_create"


def before_shuffle_created(scheduler: Scheduler, hook: Callable[[TaskState], None]) -> None:
    """Call `hook(barrier task)` each time a worker asks the scheduler for a P2P shuffle (rechunk, shuffle, merge),
    before the first ask creates it and P2P picks its output workers."""
    original = scheduler.handlers.get(SHUFFLE_CREATE_HANDLER)
    if original is None:  # no P2P extension on this scheduler
        return

    def get_or_create(shuffle_id: Any, key: Any, worker: str) -> Any:
        barrier = scheduler.tasks.get(barrier_key(shuffle_id))
        if barrier is not None:
            hook(barrier)
        return original(shuffle_id=shuffle_id, key=key, worker=worker)

    scheduler.handlers[SHUFFLE_CREATE_HANDLER] = get_or_create


def on_p2p_send(record: Callable[[str, str, int], None]) -> None:
    """Call `record(from worker, to worker, bytes)` for every batch of P2P shards this process's workers send
    (installed once per process; the shards are sent as Dask sends them)."""
    if getattr(ShuffleRun._send, "_dask_regions_recorded", False):
        return
    send = ShuffleRun._send

    async def recorded(self: ShuffleRun, address: str, shards: Any) -> Any:  # type: ignore[type-arg]
        record(self.local_address, address, _nbytes(shards))
        return await send(self, address, shards)

    recorded._dask_regions_recorded = True  # type: ignore[attr-defined]
    ShuffleRun._send = recorded  # type: ignore[method-assign]


def before_graph_sent(client: Client, check: Callable[[Any, list[Any]], None]) -> None:
    """Call `check(expression, output keys)` each time `client` is about to send a graph to the scheduler; an
    exception from `check` stops it unsent (installed once per client)."""
    send = client._graph_to_futures
    if getattr(send, "_dask_regions_checked", False):
        return

    def checked(expr: Any, keys: Any, *args: Any, **kwargs: Any) -> Any:
        check(expr, list(keys))
        return send(expr, keys, *args, **kwargs)  # type: ignore[no-untyped-call]

    checked._dask_regions_checked = True  # type: ignore[attr-defined]
    client._graph_to_futures = checked  # type: ignore[method-assign]


def import_dataframe_first() -> None:
    """Import dask.dataframe in a worker before anything of it is unpickled. A worker whose first DataFrame work is
    receiving P2P shards unpickles classes of `dask.dataframe.dask_expr` before `dask.dataframe` itself, which
    fails with a circular import and takes the worker's connection down (seen here with dask 2026.8.0 on a
    combining pool's worker; the import order dask-expr#706 and #903 dealt with)."""
    with contextlib.suppress(ImportError):  # no pandas on this worker: it receives no DataFrame shards either
        import dask.dataframe  # noqa: F401


def _nbytes(shards: Any) -> int:
    from dask.sizeof import sizeof

    if isinstance(shards, bytes | bytearray | memoryview):
        return len(shards)
    return int(sum(sizeof(shard) for _, shard in shards))


def prefix_duration(scheduler: Scheduler, prefix: TaskPrefix) -> float:
    """Dask's expected seconds for a task of this prefix (measured average, or its default)."""
    return float(scheduler._get_prefix_duration(prefix))


def narrow_retirement(peers: Callable[[Any, Any], set[Any] | None]) -> None:
    """Graceful retirement copies a worker's unique data to any worker: give it only `peers(scheduler, retiring
    worker)` as candidates (None: Dask's choice). Idempotent."""
    if getattr(RetireWorker.run, "_dask_regions", False):
        return
    original = RetireWorker.run

    def run(self: Any) -> Any:
        scheduler = self.manager.scheduler
        candidates = peers(scheduler, scheduler.workers.get(self.address))
        suggestions = original(self)
        try:
            suggestion = next(suggestions)
            while True:
                if candidates is not None and suggestion.op == "replicate" and suggestion.candidates is None:
                    suggestion = Suggestion("replicate", suggestion.ts, candidates)
                answer = yield suggestion
                suggestion = suggestions.send(answer)
        except StopIteration:
            return

    run._dask_regions = True  # type: ignore[attr-defined]
    RetireWorker.run = run  # type: ignore[method-assign]


# ------------------------------------------------------------------------------------------ xarray
class TaggingDaskManager(DaskManager):
    """xarray's Dask chunk manager, wrapping every array it chunks in `wrap(array)` first (a tagged array)."""

    def __init__(self, wrap: Callable[[Any], Any]) -> None:
        super().__init__()
        self.wrap = wrap

    def from_array(self, data: Any, chunks: Any, **kwargs: Any) -> Any:
        if isinstance(data, ImplicitToExplicitIndexingAdapter):
            kwargs["meta"] = np.ndarray  # as DaskManager: file-backed arrays compute with NumPy
        return super().from_array(self.wrap(data), chunks, **kwargs)


# ------------------------------------------------------------------------------------------ checks
def _parameters(function: Callable[..., Any]) -> list[str]:
    return list(inspect.signature(function).parameters)


def _check_task_spec() -> str | None:
    if not (hasattr(Task, "args") and hasattr(Task, "kwargs") and hasattr(DataNode, "value")
            and issubclass(Task, GraphNode) and callable(getattr(Task, "has_subgraph", None))):
        return "dask._task_spec: Task.args/kwargs, DataNode.value or Task.has_subgraph changed"
    return None


def _check_transition() -> str | None:
    wanted = {"_transition": ["self", "key", "finish", "stimulus_id"],
              "_transitions": ["self", "recommendations", "client_msgs", "worker_msgs", "stimulus_id"],
              "send_all": ["self", "client_msgs", "worker_msgs"]}
    for name, parameters in wanted.items():
        found = _parameters(getattr(Scheduler, name, lambda: None))
        if found[:len(parameters)] != parameters:
            return f"Scheduler.{name}{tuple(found)}: expected parameters {tuple(parameters)}"
    return None


def _check_prefix_duration() -> str | None:
    found = _parameters(getattr(Scheduler, "_get_prefix_duration", lambda: None))
    if found == ["self", "prefix"]:
        return None
    return f"Scheduler._get_prefix_duration{tuple(found)}: expected (self, prefix)"


def _check_retirement() -> str | None:
    if not inspect.isgeneratorfunction(RetireWorker.run):
        return "distributed.active_memory_manager.RetireWorker.run is no longer a generator of Suggestions"
    if Suggestion._fields != ("op", "ts", "candidates"):
        return (f"distributed.active_memory_manager.Suggestion fields {Suggestion._fields}: "
                "expected (op, ts, candidates)")
    return None


def _check_p2p() -> str | None:
    if "barrier.worker_restrictions" not in inspect.getsource(ShuffleSchedulerPlugin._calculate_worker_for):
        return ("distributed.shuffle: P2P no longer picks its output workers among the barrier task's worker "
                "restrictions (ShuffleSchedulerPlugin._calculate_worker_for)")
    if f'"{SHUFFLE_CREATE_HANDLER}"' not in inspect.getsource(ShuffleSchedulerPlugin.__init__) or _parameters(
            ShuffleSchedulerPlugin.get_or_create) != ["self", "shuffle_id", "key", "worker"]:
        return (f"distributed.shuffle: the scheduler's {SHUFFLE_CREATE_HANDLER} handler "
                "(ShuffleSchedulerPlugin.get_or_create(shuffle_id, key, worker)) changed")
    if _parameters(getattr(ShuffleRun._send, "__wrapped__", ShuffleRun._send))[:3] != ["self", "address", "shards"] \
            or "local_address" not in _parameters(ShuffleRun.__init__):
        return "distributed.shuffle: ShuffleRun._send(self, address, shards) or ShuffleRun.local_address changed"
    return None


def _check_graph_sending() -> str | None:
    found = _parameters(Client._graph_to_futures)
    if found[:3] != ["self", "expr", "keys"]:
        return f"Client._graph_to_futures{tuple(found)}: expected parameters (self, expr, keys, ...)"
    return None


def _check_chunk_manager() -> str | None:
    from xarray.namedarray.parallelcompat import guess_chunkmanager

    manager = TaggingDaskManager(lambda array: array)
    if guess_chunkmanager(manager) is not manager:
        return "xarray.namedarray.parallelcompat.guess_chunkmanager no longer accepts a chunk manager instance"
    if _parameters(DaskManager.from_array)[:3] != ["self", "data", "chunks"]:
        return "xarray.namedarray.daskmanager.DaskManager.from_array(self, data, chunks, ...) changed"
    return None


CHECKS: dict[str, Callable[[], str | None]] = {
    "dask._task_spec": _check_task_spec,
    "Scheduler._transition(s)": _check_transition,
    "Scheduler._get_prefix_duration": _check_prefix_duration,
    "RetireWorker.run": _check_retirement,
    "P2P output workers": _check_p2p,
    "Client._graph_to_futures": _check_graph_sending,
    "xarray DaskManager": _check_chunk_manager,
}


def installed_versions() -> dict[str, str]:
    return {package: importlib.metadata.version(package) for package in PINNED}


def problem(name: str) -> str | None:
    """What changed in one internal, with the versions written against and the ones installed; None if unchanged."""
    found = CHECKS[name]()
    if found is None:
        return None
    return (f"Dask internal {name!r} changed: {found}. dask_regions was written against "
            f"{', '.join(f'{k} {v}' for k, v in PINNED.items())}; installed: "
            f"{', '.join(f'{k} {v}' for k, v in installed_versions().items())}. Update dask_regions/internals.py.")


def problems() -> list[str]:
    return [text for name in CHECKS if (text := problem(name))]
