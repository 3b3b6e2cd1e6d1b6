"""`python -m catalog_cli`: run one region's nightly sync from a developer's machine, against given endpoints, with
progress. Tooling beside the data plane, not in its wheel: it reads stack files (stackconfig) and prints with typer
and rich, which the sync's Lambda image does not carry."""
