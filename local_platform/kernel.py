"""The notebook kernel, built here as the SageMaker start script builds it (components/kernel.py): a venv with the
data plane's wheel and its `notebook` extra, pinned by requirements.txt, and a kernelspec whose environment points
at a running local platform. The venv is cached by what goes into it, so only the first build takes minutes."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from components.kernel import KERNEL
from local_platform.tls import LocalTls
from stackconfig import PROJECT_DIR
from wheel_build import constraints, wheel

CACHE = PROJECT_DIR / ".kernel-venvs"


def kernel_venv(cache: Path = CACHE) -> Path:
    """The kernel's venv: reused while the wheel and the pins are the same, else built anew."""
    built = wheel()
    pins = constraints()
    digest = hashlib.sha256(built.read_bytes() + pins.read_bytes() + KERNEL.extra.encode()).hexdigest()[:16]
    venv = cache / digest
    if (venv / ".complete").exists():
        return venv
    cache.mkdir(exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "--constraint", str(pins), f"{built}[{KERNEL.extra}]"], check=True)
    (venv / ".complete").write_text(digest)
    return venv


def kernel_certificate(tls: LocalTls, directory: Path) -> Path:
    """The run's client certificate in the shape the kernel is declared with (`ca.pem`, `cert.pem`, `key.pem` in one
    private directory, as the SageMaker start script writes them from the secret)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    files = tls.roles["client"]
    for name, source in (("ca", tls.ca), ("cert", files.cert), ("key", files.key)):
        target = directory / f"{name}.pem"
        target.touch(mode=0o600)
        target.write_text(source.read_text())
    return directory


def install_kernelspec(venv: Path, prefix: Path, environment: dict[str, str]) -> Path:
    """The kernelspec under `prefix` (point JUPYTER_PATH at `<prefix>/share/jupyter`); returns its directory."""
    subprocess.run([str(venv / "bin" / "python"), "-m", "ipykernel", "install", "--prefix", str(prefix),
                    *KERNEL.install_arguments(environment)], check=True, capture_output=True)
    spec = prefix / "share" / "jupyter" / "kernels" / KERNEL.name
    json.loads((spec / "kernel.json").read_text())  # written and readable
    return spec
