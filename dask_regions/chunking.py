"""How opened data is cut into Dask chunks."""

from __future__ import annotations

from typing import Any


def stored_chunks(dataset: Any, chunks: Any) -> Any:
    """For `chunks="auto"`: sizes Dask's auto-chunking picks in whole multiples of how each variable is stored.
    Chunking an opened dataset with "auto" ignores the stored layout: a store of whole-grid time slices came out
    as spatial tiles, and every task then read every stored chunk whole for its tile (10x the reads)."""
    if not (isinstance(chunks, str) and chunks == "auto"):
        return chunks
    from dask.array.core import normalize_chunks

    sizes: dict[str, Any] = {}
    for variable in sorted(dataset.data_vars.values(), key=lambda v: -int(v.size)):  # the largest decide
        preferred = variable.encoding.get("preferred_chunks") or {}
        if not variable.dims or not all(dim in preferred for dim in variable.dims):
            continue
        normalized = normalize_chunks("auto", variable.shape, dtype=variable.dtype,  # type: ignore[no-untyped-call]
                                      previous_chunks=tuple(preferred[dim] for dim in variable.dims))
        for dim, sizes_along in zip(variable.dims, normalized, strict=True):
            sizes.setdefault(dim, sizes_along)
    return {**dict.fromkeys(dataset.dims, "auto"), **sizes} if sizes else "auto"
