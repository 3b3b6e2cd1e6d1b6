"""`python -m local_platform up|demo|down|status --stack dev`: the deployment twin. It runs what the Pulumi program
declares for a stack (its resource graph, recorded under mocks) on this machine."""

from __future__ import annotations

import shlex
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from local_platform.demo import run_demo, wait_for_idle_pools
from local_platform.platform import LocalPlatform, PlatformError
from local_platform.state import PlatformState, UnknownUserError, read_twin
from stackconfig import PROJECT_DIR, ConfigError, StackConfig, load_stack_file, raw_stack_config

console = Console()
app = typer.Typer(add_completion=False, help=__doc__, rich_markup_mode=None, no_args_is_help=True)

StackOption = Annotated[str, typer.Option(help="Use Pulumi.<stack>.yaml.")]
StateOption = Annotated[Path, typer.Option(help="Where the platform keeps its data, logs and pids.")]
CatalogOption = Annotated[str, typer.Option(
    help="The OpenSearch catalog's stand-in: sqlite (embedded) or opensearch (osmem); a stack with catalog.kind s3 "
         "runs its S3 catalog as declared.")]
UserOption = Annotated[str | None, typer.Option(
    help="A stack with client.users: whose own cluster (the kernel their notebook would have).")]
SizeOption = Annotated[int, typer.Option(help="Sample data size factor (1: small enough for 2 cores).")]
RunningStackOption = Annotated[str | None, typer.Option(
    "--stack", help="The stack you expect to find running there (refused if another stack runs).")]
IdleOption = Annotated[int | None, typer.Option(
    help="Stack config override: every worker region's idleTimeoutMinutes (minutes an idle pool keeps a warm "
         "worker).")]
WindowOption = Annotated[int | None, typer.Option(
    help="Stack config override: client.scaleInWindowSeconds (how long a pool's demand must stay lower before "
         "it falls).")]
# The demo shows pools shrinking to their minimum: no need to wait half an hour. Local-only overrides, through the
# stack config keys (so the program declares them, and the twin runs what it declares).
DEMO_IDLE_MINUTES, DEMO_SCALE_IN_WINDOW = 0, 5


def _config(stack: str) -> StackConfig:
    try:
        return load_stack_file(PROJECT_DIR, stack)
    except ConfigError as error:
        console.print(escape(str(error)), style="red")
        raise typer.Exit(2) from None


def overrides(stack: str, idle_minutes: int | None, scale_in_window: int | None) -> dict[str, Any]:
    """Stack config overrides (top-level keys, whole values) for the local-only settings."""
    _, raw = raw_stack_config(PROJECT_DIR, stack)
    changed: dict[str, Any] = {}
    if idle_minutes is not None:
        changed["workers"] = [{**worker, "idleTimeoutMinutes": idle_minutes} for worker in raw["workers"]]
    if scale_in_window is not None:
        changed["client"] = {**raw["client"], "scaleInWindowSeconds": scale_in_window}
    return changed


def _running(state_dir: Path, stack: str | None) -> PlatformState | None:
    """The state of the platform running from `state_dir`, checked against `--stack` when given."""
    state = PlatformState.load(state_dir.resolve())
    if state is not None and stack is not None and state.stack != stack:
        console.print(f"the platform running from {state_dir} is stack {state.stack!r}, not {stack!r}: "
                      f"give --stack {state.stack} (or another --state-dir)", style="red")
        raise typer.Exit(1)
    return state


def _fail(error: Exception) -> typer.Exit:
    console.print(escape(str(error)), style="red")
    return typer.Exit(1)


def _print_state(state: PlatformState) -> None:
    table = Table(title=f"local platform (stack {state.stack})", show_header=False)
    if state.scheduler_address:
        table.add_row("scheduler", state.scheduler_address)
        table.add_row("dashboard", state.dashboard_url)
    for user, cluster in sorted(state.users.items()):  # client.users: started when they connect
        table.add_row(f"{user}'s scheduler", f"{cluster['scheduler_address']}, dashboard {cluster['dashboard_url']}: "
                      f"started by `dr.connect()` after `eval \"$(python -m local_platform env --user {user})\"`")
    table.add_row("catalog", state.catalog)
    for region, endpoint in state.s3_endpoints.items():
        table.add_row(f"AWS emulation {region}", endpoint)
    table.add_row("pools", ", ".join(state.pools))
    table.add_row("TLS", f"mutual TLS; CA and certificates in {state.tls_dir} (clients: `eval \"$(python -m "
                  f"local_platform env)\"`)")
    table.add_row("Lustre stand-ins", f"{state.state_dir}/fsx/<region>")
    console.print(table)


def _print_twin(state: PlatformState) -> None:
    """What of the declared graph runs here, as what, and what does not, with the reason."""
    twin = read_twin(state.state_dir)
    for title, groups in (("runs here", twin["run"]), ("not run here", twin["unrun"])):
        table = Table(title=f"declared resources: {title}", show_lines=False)
        table.add_column("resources")
        table.add_column("how" if title == "runs here" else "why")
        for reason, names in sorted(groups.items()):
            table.add_row(f"{len(names)}: {', '.join(sorted(names))}", reason)
        console.print(table)


@app.command()
def up(stack: StackOption = "dev", state_dir: StateOption = Path("state"), catalog: CatalogOption = "sqlite",
       size: SizeOption = 1, idle_timeout_minutes: IdleOption = None, scale_in_window: WindowOption = None) -> None:
    """Start the platform the stack declares: AWS emulations with sample data, the scheduler and pools, the
    first nightly sync."""
    _config(stack)
    try:
        with console.status("starting") as status:
            state = LocalPlatform(stack, state_dir, catalog=catalog, size=size,
                                  overrides=overrides(stack, idle_timeout_minutes, scale_in_window),
                                  report=lambda message: status.update(message)).up()
    except PlatformError as error:
        raise _fail(error) from None
    _print_state(state)


class _Interrupt:
    """Ctrl-C and SIGTERM stop the demo. The signal is also remembered and raised again at the next progress
    report: Python drops an exception raised while a finaliser runs (a Dask object collected mid-run), so a signal
    landing there would otherwise be lost and the demo would run on."""

    def __init__(self) -> None:
        self.received = False
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = True
        raise KeyboardInterrupt

    def check(self) -> None:
        if self.received:
            raise KeyboardInterrupt

    def checked(self, report: Callable[..., None]) -> Callable[..., None]:
        """`report`, after checking for a signal."""
        def checked_report(*args: Any) -> None:
            self.check()
            report(*args)
        return checked_report


@app.command()
def demo(stack: StackOption = "dev", state_dir: StateOption = Path("state"), catalog: CatalogOption = "sqlite",
         size: SizeOption = 1, idle_timeout_minutes: IdleOption = DEMO_IDLE_MINUTES,
         scale_in_window: WindowOption = DEMO_SCALE_IN_WINDOW) -> None:
    """`up`, the reference analysis with its audit and a plot, the pools shrinking to their minimum after it,
    then `down`."""
    if users := [user.name for user in _config(stack).client.users]:
        console.print(f"stack {stack!r} declares client.users ({', '.join(users)}): each user computes on a cluster "
                      "of their own, which the demo does not choose for them. Fix: `python -m local_platform up "
                      f"--stack {stack}`, then as each user `eval \"$(python -m local_platform env --user <name>)\"` "
                      "and `dr.connect()` (docs/local-platform.md: users)", style="red")
        raise typer.Exit(2)
    try:
        platform = LocalPlatform(stack, state_dir, catalog=catalog, size=size,
                                 overrides=overrides(stack, idle_timeout_minutes, scale_in_window))
    except PlatformError as error:
        raise _fail(error) from None
    interrupt = _Interrupt()  # tear down on SIGTERM as on Ctrl-C, even if the first signal is swallowed
    try:
        with console.status("starting the platform") as status:
            platform.report = interrupt.checked(status.update)
            state = platform.up()  # refused: nothing changed; failed: up stopped what it had started
            interrupt.check()
    except PlatformError as error:
        raise _fail(error) from None
    except KeyboardInterrupt:
        console.print("interrupted: stopping the platform", style="yellow")  # up stopped what it had started
        raise typer.Exit(130) from None
    try:  # from here on the platform is this demo's: it stops it, whatever happens
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console, transient=True) as bar:
            step = bar.add_task("the reference analysis", total=None)
            result = run_demo(state, interrupt.checked(lambda message: bar.update(step, description=message)),
                              interrupt.checked(lambda done, total: bar.update(step, completed=done, total=total)))
        table = Table(title="where the work ran and what crossed regions")
        for column in ("pool", "tasks"):
            table.add_column(column)
        for pool, count in sorted(result.audit.placement.items()):
            table.add_row(pool, str(count))
        console.print(table)
        console.print(escape(result.audit.table()))
        console.print(f"misplaced tasks: {len(result.audit.misplaced)}; ambiguous: {len(result.audit.ambiguous)}; "
                      f"bytes between regions: "
                      f"{result.audit.bytes_across_regions:,}; mean warming (area-weighted global mean): "
                      f"{result.mean_warming_kelvin:.2f} K")
        console.print(f"plot: {result.plot}")
        with console.status("waiting for the idle pools to scale in"):
            story = wait_for_idle_pools(state, check=interrupt.check)
        for pool, sizes in sorted(story.items()):
            console.print(f"{pool} workers over time: {' -> '.join(map(str, sizes))}")
        if not result.audit.proven:
            raise typer.Exit(1)
    except KeyboardInterrupt:
        console.print("interrupted: stopping the platform", style="yellow")
        raise typer.Exit(130) from None
    except Exception as error:
        if isinstance(error, typer.Exit):
            raise
        raise _fail(error) from None
    finally:
        stopped = platform.down()
        console.print(f"stopped {len(stopped)} processes")


@app.command()
def down(stack: RunningStackOption = None, state_dir: StateOption = Path("state")) -> None:
    """Stop every process the platform started, and nothing else."""
    state = _running(state_dir, stack)
    if state is None:
        console.print(f"no platform is running from {state_dir}")
        return
    stopped = LocalPlatform.__new__(LocalPlatform)
    stopped.state_dir = state_dir.resolve()
    console.print(f"stopped: {', '.join(LocalPlatform.down(stopped)) or 'nothing was still running'}")


@app.command()
def env(stack: RunningStackOption = None, state_dir: StateOption = Path("state"), user: UserOption = None) -> None:
    """Shell exports that let a Dask client or notebook reach the running platform (mutual TLS); on a stack with
    client.users, as that user's own notebook kernel (their cluster, certificate, role and logs)."""
    state = _running(state_dir, stack)
    if state is None:
        console.print(f"no platform is running from {state_dir}", style="red")
        raise typer.Exit(1)
    try:
        state = state.for_user(user)
    except UnknownUserError as error:
        console.print(escape(str(error)), style="red")
        raise typer.Exit(2) from None
    for name, value in state.client_environment().items():
        print(f"export {name}={shlex.quote(value)}")


@app.command()
def status(stack: RunningStackOption = None, state_dir: StateOption = Path("state")) -> None:
    """What is running, and where."""
    _running(state_dir, stack)
    state, alive = LocalPlatform.status(state_dir)
    if state is None:
        console.print(f"no platform is running from {state_dir}")
        raise typer.Exit(1)
    _print_state(state)
    _print_twin(state)
    for name, up_now in alive.items():
        console.print(f"{name}: {'running' if up_now else 'stopped'}")
    if not all(alive.values()):
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
