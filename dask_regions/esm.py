"""Open an intake-esm search result region-pinned: every asset opened by a worker of its own region, the assets of
each dataset aggregated as intake-esm aggregates them (its `aggregation_control`: `union`, `join_new`,
`join_existing`, outermost first), keyed as intake-esm keys them.

A Pangeo notebook changes one line: `dsets = cat.search(...).to_dataset_dict()` becomes
`dsets = dask_regions.to_dataset_dict(client, cat.search(...))`. The datastore is one that
`Catalog.to_intake_esm` wrote (its `region` column says where each asset is), or any datastore with such a column.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from dask_regions.opening import open_many
from dask_regions.pools import DEFAULT_POOL_TIMEOUT

KEY_SEPARATOR = "."  # intake-esm's default
ENGINES = {"zarr": "zarr", "netcdf": "h5netcdf"}


def _parts(source: Any, aggregation_control: Mapping[str, Any] | None) -> tuple[Any, dict[str, Any], str | None]:
    """(rows, aggregation control, the single asset format or None) of an esm datastore or a DataFrame."""
    if hasattr(source, "esmcat") and hasattr(source, "df"):
        control = source.esmcat.aggregation_control.model_dump()
        assets = source.esmcat.assets
        return source.df, control, getattr(assets, "format", None) and str(assets.format.value)
    if aggregation_control is None:
        raise TypeError("give an intake-esm datastore (e.g. cat.search(...)), or its DataFrame with "
                        "aggregation_control= from its description")
    return source, dict(aggregation_control), None


def dataset_keys(rows: Any, groupby: Sequence[str]) -> dict[str, Any]:
    """intake-esm's dataset keys (the group's values joined by ".") and each dataset's rows."""
    if not groupby:
        return {"": rows}
    return {KEY_SEPARATOR.join(map(str, values if isinstance(values, tuple) else (values,))): group
            for values, group in rows.groupby(list(groupby), sort=True)}


def to_dataset_dict(client: Any, source: Any, *, keys: Iterable[str] | None = None, chunks: Any = "auto",
                    aggregation_control: Mapping[str, Any] | None = None, asset_format: str | None = None,
                    timeout: float = DEFAULT_POOL_TIMEOUT) -> dict[str, Any]:
    """Each dataset of an intake-esm datastore (or search result), opened in its region and aggregated."""
    rows, control, fixed_format = _parts(source, aggregation_control)
    groups = dataset_keys(rows, control.get("groupby_attrs") or [])
    wanted = set(keys) if keys is not None else set(groups)
    unknown = sorted(wanted - set(groups))
    if unknown:
        raise KeyError(f"no dataset {', '.join(unknown)}; the datastore has {', '.join(sorted(groups))}")
    opened = {}
    for key in sorted(wanted):
        group = groups[key]
        regions = sorted(set(group["region"]))
        if len(regions) != 1:
            raise ValueError(f"dataset {key} has assets in {', '.join(regions)}: search one region at a time "
                             "(.search(region=...)) and combine the results")
        formats = set(group["format"]) if "format" in group else {fixed_format or asset_format}
        engine = ENGINES.get(str(formats.pop())) if len(formats) == 1 else None
        paths = list(group["path"])
        by_path = dict(zip(paths, open_many(client, paths, regions[0], chunks=chunks, engine=engine,
                                            timeout=timeout), strict=True))
        dataset = _aggregate(group, list(control.get("aggregations") or []), by_path)
        dataset.attrs["intake_esm_dataset_key"] = key
        dataset.attrs["dask_regions_region"] = regions[0]
        opened[key] = dataset
    return opened


def _aggregate(rows: Any, aggregations: list[dict[str, Any]], opened: Mapping[str, Any]) -> Any:
    """Combine the opened assets of one dataset, the first aggregation outermost (as intake-esm does)."""
    import xarray as xr

    if not aggregations:
        if len(rows) != 1:
            raise ValueError(f"{len(rows)} assets and no aggregation left to combine them")
        return opened[rows["path"].iloc[0]]
    first, rest = aggregations[0], aggregations[1:]
    name, kind = first["attribute_name"], first["type"]
    options = dict(first.get("options") or {})
    values = sorted(set(rows[name]))
    parts = [_aggregate(rows[rows[name] == value], rest, opened) for value in values]
    if len(parts) == 1 and kind != "join_new":
        return parts[0]
    if kind == "union":
        return xr.merge(parts, **options)
    if kind == "join_new":
        return xr.concat(parts, dim=xr.Variable(name, values), **options)
    if kind == "join_existing":
        dim = options.pop("dim")
        return xr.concat(parts, dim=dim, **options)
    raise ValueError(f"aggregation {kind!r}: dask_regions knows union, join_new and join_existing")
