"""The Dask image's entrypoint: `entrypoint.py scheduler|worker [dask arguments...]`.

ECS hands the role's certificate, key and CA over as secrets (DASK_TLS_CERT, DASK_TLS_KEY, DASK_TLS_CA: PEM
text from Secrets Manager). They are written to a private directory, on tmpfs where the task has one
(DASK_TLS_DIR), removed from the environment, and Dask starts with `tls://` and the TLS flags. Without all
three it refuses to start: a Dask process on plain TCP would accept anyone who can reach its port.
Other dask subcommands (e.g. `--version`) run unchanged.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

PEM_VARIABLES = {"ca": "DASK_TLS_CA", "cert": "DASK_TLS_CERT", "key": "DASK_TLS_KEY"}
FALLBACK_DIRECTORIES = ("/run/dask-tls", "/dev/shm/dask-tls")


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


def main(arguments: Sequence[str]) -> None:
    environ = dict(os.environ)
    try:
        if arguments and arguments[0] in ("scheduler", "worker"):
            paths = write_credentials(environ)
            command = dask_command(arguments, paths)
        else:
            command = dask_command(arguments, {})
    except EntrypointError as error:
        print(f"entrypoint: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    for variable in PEM_VARIABLES.values():  # the key stays in the file only, not in /proc/<pid>/environ
        environ.pop(variable, None)
    environ["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] = "True"
    os.execvpe(command[0], command, environ)


if __name__ == "__main__":
    main(sys.argv[1:])
