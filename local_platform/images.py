"""The platform's images built and run on this machine (`make images`): the real Dockerfiles on a Debian base that
debootstrap makes from Debian's packages, since no base image can be pulled here.

    python -m local_platform.images [--json]

Three steps, each skipped when an image of the same inputs exists (its tag is their digest):
1. **base**: `debootstrap --variant=minbase bookworm` with BASE_PACKAGES, a venv at /opt/python first on PATH
   (bookworm's python3 is 3.11, as python:3.11-slim-bookworm's), then `docker import`. The base trusts the CAs this
   machine trusts (its bundle is copied in, and pip told to use it): here the package registries may be reached
   through a proxy whose CA only this machine's bundle holds. The base is never pushed anywhere.
2. **lambda-base**: images/lambda-base/Dockerfile on the base: the part AWS's Lambda Python base image plays for
   the catalog-sync image (AWS's runtime interface client as the entrypoint, LAMBDA_TASK_ROOT).
3. **dask** and **catalog-sync**: images/<name>/Dockerfile with BASE_IMAGE set to 1 or 2, tagged with the content tag
   `pulumi up` gives them (components.image.content_tag) and the base's.

What the engine needs: Debian's docker.io started as `dockerd --storage-driver=vfs --iptables=false --bridge=none`
(.ci/run does it as root), and debootstrap. `engine_problem()` names what is missing in one line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from components.image import CATALOG_SYNC_IMAGE, DASK_IMAGE, ImageSpec, content_tag
from stackconfig import PROJECT_DIR
from wheel_build import DIST_DIR, constraints, wheel

SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
VENV = "/opt/python"
PATH = f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
LAMBDA_BASE = ImageSpec("images/lambda-base/Dockerfile", ("requirements.txt",), ())
REPOSITORY = "crossregiondask"  # local image names: crossregiondask/<name>:<tag>
MIRROR_VARIABLE = "DEBIAN_MIRROR"
BUILD_TIMEOUT = 1800.0  # a cold build downloads every pinned package: bounded, never waits forever


class ImageError(RuntimeError):
    """A build or the engine failed; the message says what and where to look."""


@dataclass(frozen=True)
class Built:
    name: str
    reference: str
    seconds: float  # 0 when it was already there
    size_bytes: int


def run_detached(name: str, image: str, command: list[str], environment: dict[str, str], *options: str,
                 network: str = "host") -> None:
    """`docker run --detach` of one declared task or function: its environment as `--env` flags (the values stay
    out of a shell), on the host's network by default (the engine here runs without a bridge)."""
    flags = [flag for key, value in environment.items() for flag in ("--env", f"{key}={value}")]
    docker("run", "--detach", "--name", name, "--network", network, *options, *flags, image, *command)


def docker(*arguments: str, timeout: float = 120.0, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The docker CLI, with the classic builder (the CLI here has no buildx plugin) and a bounded wait."""
    environment = {**os.environ, "DOCKER_BUILDKIT": "0"}
    try:
        result = subprocess.run(["docker", *arguments], capture_output=True, text=True, timeout=timeout,
                                env=environment, check=False)
    except subprocess.TimeoutExpired as error:
        raise ImageError(f"`docker {' '.join(arguments[:2])}` did not finish in {timeout:.0f} s") from error
    if check and result.returncode != 0:
        output = (result.stderr or result.stdout).strip()[-2000:]
        raise ImageError(f"`docker {' '.join(arguments[:2])}` failed: {output}")
    return result


def engine_problem() -> str | None:
    """None when images can be built and run here; otherwise one line naming what is missing."""
    if shutil.which("docker") is None:
        return "no docker CLI: install Debian's docker.io (as root: apt-get install docker.io debootstrap)"
    try:
        info = docker("info", "--format", "{{.ServerVersion}}", timeout=20, check=False)
    except ImageError:
        return "the container engine does not answer `docker info` within 20 s"
    if info.returncode != 0:
        return ("no container engine running: as root, start `dockerd --storage-driver=vfs --iptables=false "
                "--bridge=none` (see .ci/run)")
    if shutil.which("debootstrap") is None:
        return "no debootstrap: it builds the Debian base (as root: apt-get install debootstrap)"
    if os.geteuid() != 0:
        return "debootstrap needs root"
    return None


def debian_mirror() -> str:
    """The Debian archive this machine's apt uses for SUITE (or $DEBIAN_MIRROR): the base comes from where the
    machine's own packages come from."""
    if os.environ.get(MIRROR_VARIABLE):
        return os.environ[MIRROR_VARIABLE]
    sources = Path("/etc/apt")
    for path in sorted(sources.glob("sources.list.d/*.sources")):  # deb822: a stanza per source
        for stanza in path.read_text().split("\n\n"):
            fields = dict(re.findall(r"(?m)^(\w[\w-]*):\s*(.+)$", stanza))
            if SUITE in fields.get("Suites", "").split() and "main" in fields.get("Components", "").split():
                return str(fields["URIs"].split()[0])
    for path in [sources / "sources.list", *sorted(sources.glob("sources.list.d/*.list"))]:
        if path.exists():
            for line in path.read_text().splitlines():
                if match := re.match(rf"\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+{SUITE}\s", line + " "):
                    return match.group(1)
    raise ImageError(f"no Debian {SUITE} archive in /etc/apt: set {MIRROR_VARIABLE} to one")


def base_tag() -> str:
    """Named by what goes into it: the suite, the packages, the venv and the CA bundle it trusts."""
    trusted = hashlib.sha256(Path(CA_BUNDLE).read_bytes()).hexdigest()
    recipe = json.dumps([SUITE, BASE_PACKAGES, VENV, PATH, trusted])
    return f"{REPOSITORY}/base:{SUITE}-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"


def _exists(reference: str) -> bool:
    return docker("image", "inspect", reference, check=False).returncode == 0


def _size(reference: str) -> int:
    return int(docker("image", "inspect", "--format", "{{.Size}}", reference).stdout.strip())


def build_base(log: Path) -> Built:
    reference = base_tag()
    if _exists(reference):
        return Built("base", reference, 0.0, _size(reference))
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="base-") as directory:
        root = Path(directory) / "root"
        with log.open("a") as output:
            command = ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", SUITE, str(root),
                       debian_mirror()]
            try:
                done = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, timeout=900, check=False)
            except subprocess.TimeoutExpired as error:
                raise ImageError(f"debootstrap did not finish in 900 s (see {log})") from error
            if done.returncode != 0:
                raise ImageError(f"debootstrap failed (see {log})")
            venv = subprocess.run(["chroot", str(root), "python3", "-m", "venv", VENV], stdout=output,
                                  stderr=subprocess.STDOUT, timeout=300, check=False)
            if venv.returncode != 0:
                raise ImageError(f"creating the base's venv at {VENV} failed (see {log})")
        shutil.copyfile(CA_BUNDLE, root / CA_BUNDLE.lstrip("/"))
        for cache in (root / "var/cache/apt/archives").glob("*.deb"):
            cache.unlink()
        archive = Path(directory) / "root.tar"
        subprocess.run(["tar", "-C", str(root), "-cf", str(archive), "."], check=True, timeout=600)
        docker("import", "--change", f"ENV PATH={PATH}", "--change", "ENV LANG=C.UTF-8",
               "--change", f"ENV PIP_CERT={CA_BUNDLE}", "--change", 'CMD ["python3"]',
               str(archive), reference, timeout=600)
    return Built("base", reference, round(time.monotonic() - started, 1), _size(reference))


def build(name: str, dockerfile: str, tag: str, base: str, log: Path) -> Built:
    """One Dockerfile of this project on `base` (context: the project, as `pulumi up` builds it)."""
    reference = f"{REPOSITORY}/{name}:{tag}"
    if _exists(reference):
        return Built(name, reference, 0.0, _size(reference))
    started = time.monotonic()
    constraints()
    result = docker("build", "--network", "host", "--file", str(PROJECT_DIR / dockerfile),
                    "--build-arg", f"BASE_IMAGE={base}", "--build-arg", f"WHEEL={wheel().relative_to(DIST_DIR)}",
                    "--tag", reference, str(PROJECT_DIR), timeout=BUILD_TIMEOUT, check=False)
    with log.open("a") as output:
        output.write(result.stdout + result.stderr)
    if result.returncode != 0:
        raise ImageError(f"building {dockerfile} failed: {result.stderr.strip()[-1500:]} (whole output: {log})")
    return Built(name, reference, round(time.monotonic() - started, 1), _size(reference))


def _short(reference: str) -> str:
    """A base's short name in the tags of what is built on it: a new base (a new tag), a new name."""
    return hashlib.sha256(reference.encode()).hexdigest()[:8]


def build_all(log: Path) -> dict[str, Built]:
    """The base, the Lambda base, then the two images the stack deploys."""
    base = build_base(log)
    lambda_base = build("lambda-base", LAMBDA_BASE.dockerfile, f"{content_tag(LAMBDA_BASE)}-{_short(base.reference)}",
                        base.reference, log)
    images: dict[str, tuple[ImageSpec, Built]] = {"dask": (DASK_IMAGE, base),
                                                   "catalog-sync": (CATALOG_SYNC_IMAGE, lambda_base)}
    built = {"base": base, "lambda-base": lambda_base}
    for name, (spec, on) in images.items():
        built[name] = build(name, spec.dockerfile, f"{content_tag(spec)}-{_short(on.reference)}", on.reference, log)
    return built


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local_platform.images", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print what was built as JSON")
    parser.add_argument("--log", type=Path, default=DIST_DIR / "images.log", help="the builds' whole output")
    options = parser.parse_args(argv)
    if problem := engine_problem():
        print(f"make images: {problem}", file=sys.stderr)
        return 2
    options.log.parent.mkdir(parents=True, exist_ok=True)
    try:
        built = build_all(options.log)
    except ImageError as error:
        print(f"make images: {error}", file=sys.stderr)
        return 1
    if options.json:
        print(json.dumps({name: b.__dict__ for name, b in built.items()}, indent=2))
    else:
        for b in built.values():
            how = f"built in {b.seconds:.0f} s" if b.seconds else "already built"
            print(f"{b.name:13} {b.reference}  {b.size_bytes / 1e6:,.0f} MB  {how}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
