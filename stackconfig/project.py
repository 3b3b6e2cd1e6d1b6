"""Where the project is: the directory holding Pulumi.yaml, the stack files and the packages. Said once; the
program's tooling, the local platform, the benchmarks and the tests all import it."""

from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
