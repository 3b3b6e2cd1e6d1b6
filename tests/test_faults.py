"""The fixes bench/faults.py led to, held by fast tests (issue 34, point 3), so `make test` keeps them without the
benchmark: a nightly sync whose catalog does not answer fails within its bound, naming the catalog."""

from __future__ import annotations

import time

import pytest

from bench.faults import Blackhole
from catalog_sync import handlers, sinks

pytestmark = pytest.mark.processes  # a listener on loopback


def test_a_sync_whose_catalog_never_answers_fails_within_its_bound_naming_the_catalog(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The bound as shipped: a step gives up on a silent catalog within a minute (it took four before the fix).
    assert sinks.SYNC_TIMEOUT_SECONDS * (sinks.SYNC_RETRIES + 1) <= 60
    monkeypatch.setattr(sinks, "SYNC_TIMEOUT_SECONDS", 1)  # the same rule, at a test's pace
    hole = Blackhole()
    for name, value in {"CATALOG_ENDPOINT": hole.url, "DATASET": "s3://era5-pds", "AWS_REGION": "us-east-1",
                        "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("CATALOG_REGION", raising=False)
    started = time.monotonic()
    try:
        with pytest.raises(handlers.CatalogUnreachableError) as failed:
            handlers.handle({"action": "index"}, None)
    finally:
        hole.close()
    assert time.monotonic() - started < 10
    assert hole.url in str(failed.value) and "2 tries of 1 s" in str(failed.value)
    assert hole.held  # it did reach the listener: a silent catalog, not a refused one
