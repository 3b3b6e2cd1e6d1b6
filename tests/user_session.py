"""One user's notebook session on the local platform, as a process of its own (its environment is
`python -m local_platform env --user <name>`): connect (the broker starts their cluster), compute the reference
analysis next to the data, audit it, and print one JSON line: the audit's figures, the workers it saw and the
headline number, or the error `connect()` raised. `tests/test_users_twin.py` runs two at once."""

from __future__ import annotations

import json
import sys

import dask_regions as dr
from dask_regions.errors import ConnectError
from local_platform.demo import reference_analysis, warming


def main(tag: str) -> int:
    try:
        platform = dr.connect(timeout=30)
    except ConnectError as error:
        print(json.dumps({"refused": str(error)}))
        return 0
    client = platform.client
    catalog = platform.catalog
    era5 = dr.open_mfdataset(client, catalog.find(variable="air_temperature_at_2_metres"), concat_dim="time0")
    (store,) = catalog.find(variable_id="tas", experiment_id="ssp585")
    _, _, difference = reference_analysis(era5, dr.open_dataset(client, store))
    try:  # beyond the cluster's bound: refused, naming the quota that sets it (when one does)
        platform.scale(2, region="us-east-1")
        refused = ""
    except ValueError as error:
        refused = str(error)
    platform.adapt(region="us-east-1")  # the stack's bounds again
    since = dr.mark(client)
    # A key of this user's own, so that each audit can be shown to hold this user's tasks and not the other's.
    mine = client.submit(len, tag, key=f"only-{tag}")
    result = warming(difference.compute())
    assert mine.result() == len(tag)
    report = dr.audit(client, since)
    # Every key the scheduler has moved through a state (its transition log), not only those it still holds.
    tasks = client.run_on_scheduler(lambda dask_scheduler: sorted({str(t[0]) for t in dask_scheduler.transition_log}))
    print(json.dumps({"warming": result, "tasks": report.tasks, "placement": report.placement,
                      "proven": report.proven, "misplaced": len(report.misplaced),
                      "scheduler": client.scheduler.address, "workers": sorted(client.scheduler_info()["workers"]),
                      "keys": tasks, "logs": sorted(platform.get_logs()), "scale_refused": refused}))
    platform.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
