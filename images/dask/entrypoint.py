"""The Dask image's entrypoint: `entrypoint.py scheduler|worker [dask arguments...]`.

ECS hands the role's certificate, key and CA over as secrets (DASK_TLS_CERT, DASK_TLS_KEY, DASK_TLS_CA: PEM
text from Secrets Manager). They are written to a private directory, on tmpfs where the task has one
(DASK_TLS_DIR), removed from the environment, and Dask starts with `tls://` and the TLS flags. Without all
three it refuses to start: a Dask process on plain TCP would accept anyone who can reach its port.
Other dask subcommands (e.g. `--version`) run unchanged.

Workers: each ECS task's `--name` gets the task's id appended (several tasks of a pool must not share worker
names), and on SIGTERM (scale-in, or the instance draining on a Spot interruption notice) the task's workers are
retired through the scheduler first, so their work goes back to their own pool (dask_regions.drain), then Dask
is stopped.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

PEM_VARIABLES = {"ca": "DASK_TLS_CA", "cert": "DASK_TLS_CERT", "key": "DASK_TLS_KEY"}
FALLBACK_DIRECTORIES = ("/run/dask-tls", "/dev/shm/dask-tls")
DRAIN_SECONDS = 100  # within the container's stop timeout (120 s) and a Spot notice (two minutes)


class EntrypointError(Exception):
    """The container is misconfigured; the message says what to set."""


def _on_tmpfs(path: Path) -> bool:
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return False
    best = ("", "")
    for line in mounts:
        fields = line.split()
        if len(fields) >= 3 and (str(path) + "/").startswith(fields[1].rstrip("/") + "/") \
                and len(fields[1]) > len(best[0]):
            best = (fields[1], fields[2])
    return best[1] == "tmpfs"


def _directory(environ: Mapping[str, str]) -> Path:
    if environ.get("DASK_TLS_DIR"):
        return Path(environ["DASK_TLS_DIR"])
    for candidate in FALLBACK_DIRECTORIES:
        if _on_tmpfs(Path(candidate).parent):
            return Path(candidate)
    return Path(environ.get("HOME", "/tmp")) / ".dask-tls"


def write_credentials(environ: Mapping[str, str]) -> dict[str, Path]:
    """Write the three PEMs (0600, in a 0700 directory); returns their paths by field."""
    missing = [name for name in PEM_VARIABLES.values() if not environ.get(name, "").strip()]
    if missing:
        raise EntrypointError(
            f"{', '.join(missing)} not set: the task must receive its TLS certificate, key and CA as ECS secrets "
            "from Secrets Manager (see components/dask_tls.py); Dask does not start on plain TCP")
    directory = _directory(environ)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    if not _on_tmpfs(directory):
        print(f"entrypoint: {directory} is not on tmpfs; the key lives on the task's ephemeral storage",
              file=sys.stderr)
    paths = {}
    for field, variable in PEM_VARIABLES.items():
        path = directory / f"{field}.pem"
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(environ[variable].strip() + "\n")
        paths[field] = path
    return paths


def dask_command(arguments: Sequence[str], paths: Mapping[str, Path]) -> list[str]:
    """The `dask` command line: scheduler and worker get the TLS flags and must speak `tls://`."""
    command = ["dask", *arguments]
    role = arguments[0] if arguments else ""
    if role not in ("scheduler", "worker"):
        return command
    if any(argument.startswith("tcp://") for argument in arguments) or \
            any(a == "--protocol" and b != "tls" for a, b in itertools.pairwise(arguments)):
        raise EntrypointError(f"`dask {role}` was given a plain TCP address or protocol: use tls:// addresses")
    if role == "scheduler" and "--protocol" not in arguments:
        command += ["--protocol", "tls"]
    return [*command, "--tls-ca-file", str(paths["ca"]), "--tls-cert", str(paths["cert"]),
            "--tls-key", str(paths["key"])]


def task_id(environ: Mapping[str, str]) -> str | None:
    """This ECS task's id, from the task metadata endpoint (None outside ECS)."""
    endpoint = environ.get("ECS_CONTAINER_METADATA_URI_V4")
    if not endpoint:
        return None
    try:
        with urllib.request.urlopen(f"{endpoint}/task", timeout=5) as response:
            return str(json.load(response)["TaskARN"]).rsplit("/", 1)[-1]
    except (OSError, ValueError, KeyError) as error:
        print(f"entrypoint: no task id from the ECS metadata endpoint ({error})", file=sys.stderr)
        return None


def unique_worker_name(arguments: list[str], task: str | None) -> list[str]:
    """`--name <region>` becomes `--name <region>-<task id>`."""
    if task is None or "--name" not in arguments[:-1]:
        return arguments
    index = arguments.index("--name") + 1
    return [*arguments[:index], f"{arguments[index]}-{task[:12]}", *arguments[index + 1:]]


def run_worker(command: list[str], environ: dict[str, str], paths: Mapping[str, Path]) -> int:
    """Run `dask worker` as a child; on SIGTERM drain this task's workers through the scheduler, then stop."""
    child = subprocess.Popen(command, env=environ)
    scheduler = command[2]
    name = command[command.index("--name") + 1] if "--name" in command[:-1] else None

    def stop(signum: int, _frame: object) -> None:
        if name is not None:
            from distributed.security import Security

            from dask_regions.drain import drain

            security = Security(tls_ca_file=str(paths["ca"]), tls_client_cert=str(paths["cert"]),
                                tls_client_key=str(paths["key"]), require_encryption=True)
            retired = drain(scheduler, name, security=security, timeout=DRAIN_SECONDS)
            print(f"entrypoint: drained {len(retired)} workers of {name} before stopping", file=sys.stderr)
        if child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, lambda signum, _: child.send_signal(signum))
    return child.wait()


def main(arguments: Sequence[str]) -> None:
    environ = dict(os.environ)
    try:
        paths: dict[str, Path] = {}
        if arguments and arguments[0] in ("scheduler", "worker") and environ.get("DASK_TLS_READY"):
            paths = {field: Path(environ["DASK_TLS_DIR"]) / f"{field}.pem" for field in PEM_VARIABLES}
        elif arguments and arguments[0] in ("scheduler", "worker"):
            paths = write_credentials(environ)
            if arguments[0] == "worker":  # this process stays (it drains on SIGTERM): start again without PEMs
                clean = {k: v for k, v in environ.items() if k not in PEM_VARIABLES.values()}
                clean |= {"DASK_TLS_READY": "1", "DASK_TLS_DIR": str(paths["ca"].parent)}
                os.execve(sys.executable, [sys.executable, __file__, *arguments], clean)
        if arguments and arguments[0] == "worker":
            arguments = unique_worker_name(list(arguments), task_id(environ))
        command = dask_command(arguments, paths)
    except EntrypointError as error:
        print(f"entrypoint: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    for variable in PEM_VARIABLES.values():  # the key stays in the file only, not in /proc/<pid>/environ
        environ.pop(variable, None)
    environ["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] = "True"
    if command[1:2] == ["worker"]:
        raise SystemExit(run_worker(command, environ, paths))
    os.execvpe(command[0], command, environ)


if __name__ == "__main__":
    main(sys.argv[1:])
