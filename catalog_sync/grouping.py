"""Group an S3 listing (keys in S3's sorted order) into datasets, in one streaming pass.

All keys under a directory are contiguous in sorted order, so a store is complete as soon as a key outside
it arrives. Recognised at once: CMIP6 DRS stores (the version directory), ERA5 monthly files and
`<variable>.zarr` stores, any `*.zarr` directory, zarr v2 stores (their `.zgroup`/`.zattrs`/`.zmetadata`/
`.zarray` markers sort before their chunks), netCDF files and other files with an extension. A zarr v3
`zarr.json` sorts after its own chunks, so extensionless keys wait in a bounded pending buffer until no
`zarr.json` can claim them any more. Memory: one open store plus at most `max_pending` items.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

from catalog_sync.records import Association, DatasetRecord, record_id
from platform_facts import CMIP6_FACETS

V2_MARKERS = frozenset({".zgroup", ".zattrs", ".zmetadata", ".zarray"})
V3_MARKER = "zarr.json"
NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf")
_ERA5_FILE = re.compile(r"(\d{4})/(\d{2})/data/([^/]+)\.nc")
_ERA5_STORE = re.compile(r"(\d{4})/(\d{2})/data/([^/]+)\.zarr")
_CMIP6_VERSION = re.compile(r"v\d{8}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1 controls
# Bidirectional overrides, embeddings and isolates, and zero-width characters: they make a path read as another.
_INVISIBLE = re.compile("[\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")
MAX_KEY_BYTES = 1024
MAX_NAME_BYTES = 255  # Lustre (and most POSIX file systems): one path component
MAX_SKIPPED_EXAMPLES = 20


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: datetime


@dataclass
class _Group:
    root: str  # bucket-relative: a store's directory or a file's key
    kind: str
    facets: dict[str, str]
    key_before: str  # the key listed just before this group's first key ("" at the start)
    store: bool
    v3: bool = False
    size: int = 0
    count: int = 0
    newest: datetime = field(default_factory=lambda: datetime.min.replace(tzinfo=UTC))

    def add(self, item: ObjectInfo | _Group) -> None:
        if isinstance(item, _Group):
            self.size += item.size
            self.count += item.count
            self.newest = max(self.newest, item.newest)
        else:
            self.size += item.size
            self.count += 1
            self.newest = max(self.newest, item.last_modified)

    def contains(self, key: str) -> bool:
        return self.store and key.startswith(f"{self.root}/")


class DatasetGrouper:
    """Feed keys in sorted order with `add`; each call returns the records it completed; `finish` the rest."""

    def __init__(self, association: Association, max_pending: int = 10_000, start_after: str = "") -> None:
        self.association = association
        self.max_pending = max_pending
        self.skipped: Counter[str] = Counter()
        self.skipped_examples: list[tuple[str, str]] = []
        self._open: _Group | None = None
        self._pending: list[_Group] = []  # extensionless files and closed v3 stores, in key order
        self._last_key = start_after  # so a resumed listing's resume points never go back before it

    # --------------------------------------------------------------------------------------- public
    def add(self, item: ObjectInfo) -> list[DatasetRecord]:
        key_before, self._last_key = self._last_key, item.key
        done: list[DatasetRecord] = []
        if self._open is not None and not self._open.contains(item.key):
            done += self._close_open()
        done += self._flush_pending(item.key)
        if self._open is not None:
            self._open.add(item)
            return done
        if reason := self._unsafe(item.key):
            self._skip(item.key, reason)
            return done
        done += self._place(item, key_before)
        return done

    def finish(self) -> list[DatasetRecord]:
        done = self._close_open() if self._open is not None else []
        done += [self._record(group) for group in self._pending]
        self._pending.clear()
        return done

    def resume_point(self) -> str:
        """The last key such that every key up to it is in an emitted record (or skipped): list from just
        after it to rebuild exactly what is still open. "" means from the start."""
        open_groups = ([self._open] if self._open is not None else []) + self._pending[:1]
        return min((g.key_before for g in open_groups), default=self._last_key)

    # -------------------------------------------------------------------------------------- placing
    def _place(self, item: ObjectInfo, key_before: str) -> list[DatasetRecord]:
        key = item.key
        relative = key[len(self.association.key_prefix):]
        directory, _, name = key.rpartition("/")
        if (cmip6 := self._cmip6_root(key)) is not None:
            root, facets = cmip6
            return self._open_store(_Group(root, "cmip6-zarr", facets, key_before, store=True), item)
        if (match := _ERA5_STORE.match(relative)) and relative[match.end():].startswith("/"):
            facets = dict(zip(("year", "month", "variable"), match.groups(), strict=True))
            root = self.association.key_prefix + relative[: match.end()]
            return self._open_store(_Group(root, "era5-zarr", facets, key_before, store=True), item)
        zarr_dir = self._zarr_suffix_root(key)
        if zarr_dir is not None:
            return self._open_store(_Group(zarr_dir, "zarr", {}, key_before, store=True), item)
        if name in V2_MARKERS:
            return self._open_store(_Group(directory, "zarr", {}, key_before, store=True), item)
        if name == V3_MARKER:
            store = _Group(directory, "zarr", {}, key_before, store=True, v3=True)
            claimed = [g for g in self._pending if g.root.startswith(f"{directory}/")]
            if claimed:
                store.key_before = claimed[0].key_before
                self._pending = [g for g in self._pending if g not in claimed]
            for group in claimed:
                store.add(group)
            return self._open_store(store, item)
        if match := _ERA5_FILE.fullmatch(relative):
            facets = dict(zip(("year", "month", "variable"), match.groups(), strict=True))
            return [self._record(self._single(item, "era5-netcdf", facets, key_before))]
        if name.lower().endswith(NETCDF_SUFFIXES):
            return [self._record(self._single(item, "netcdf", {}, key_before))]
        if "." in name:  # a file with an extension is never a zarr chunk
            return [self._record(self._single(item, "file", {}, key_before))]
        self._pending.append(self._single(item, "file", {}, key_before))
        return self._cap_pending()

    def _open_store(self, group: _Group, item: ObjectInfo) -> list[DatasetRecord]:
        group.add(item)
        self._open = group
        return []

    def _close_open(self) -> list[DatasetRecord]:
        group, self._open = self._open, None
        assert group is not None
        if group.v3:  # an array inside a v3 group: the group's zarr.json may still claim it
            self._pending.append(group)
            return self._cap_pending()
        return [self._record(group)]

    def _flush_pending(self, key: str) -> list[DatasetRecord]:
        """Emit pending items no `zarr.json` can claim any more: every ancestor's marker sorts before `key`."""
        done = []
        while self._pending and self._deadline(self._pending[0].root) < key:
            done.append(self._record(self._pending.pop(0)))
        return done

    def _deadline(self, root: str) -> str:
        """The last marker that could still claim `root`: its top-most ancestor's, within the association."""
        relative = root[len(self.association.key_prefix):]
        top = relative.split("/", 1)[0] if "/" in relative else ""
        if not top:
            return f"{self.association.key_prefix}{V3_MARKER}"
        return f"{self.association.key_prefix}{top}/{V3_MARKER}"

    def _cap_pending(self) -> list[DatasetRecord]:
        done = []
        while len(self._pending) > self.max_pending:
            done.append(self._record(self._pending.pop(0)))
        return done

    # -------------------------------------------------------------------------------- classification
    def _cmip6_root(self, key: str) -> tuple[str, dict[str, str]] | None:
        parts = key.split("/")
        for start, part in enumerate(parts):
            if part == "CMIP6" and len(parts) > start + 10 and _CMIP6_VERSION.fullmatch(parts[start + 9]):
                root = "/".join(parts[: start + 10])
                if len(root) < len(self.association.key_prefix.rstrip("/")):
                    return None  # a store above the association's prefix is not ours to describe
                return root, dict(zip(CMIP6_FACETS, parts[start + 1: start + 10], strict=True))
        return None

    def _zarr_suffix_root(self, key: str) -> str | None:
        parts = key.split("/")
        for end, part in enumerate(parts[:-1]):
            if part.endswith(".zarr"):
                return "/".join(parts[: end + 1])
        return None

    def _unsafe(self, key: str) -> str | None:
        if not key.startswith(self.association.key_prefix):
            return "outside the association's prefix"
        if key.endswith("/"):
            return "directory marker"
        if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
            return "longer than S3 allows"
        if _CONTROL.search(key):
            return "control characters"
        if _INVISIBLE.search(key):
            return "bidirectional or zero-width characters (a path that reads as another)"
        if any(part in ("", ".", "..") for part in key.split("/")):
            return "empty, '.' or '..' path segment (no safe Lustre path)"
        if any(len(part.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES for part in key.split("/")):
            return f"a path component over {MAX_NAME_BYTES} bytes (Lustre's file name limit)"
        return None

    def _skip(self, key: str, reason: str) -> None:
        self.skipped[reason] += 1
        if len(self.skipped_examples) < MAX_SKIPPED_EXAMPLES:
            self.skipped_examples.append((key[:200], reason))

    # --------------------------------------------------------------------------------------- records
    @staticmethod
    def _single(item: ObjectInfo, kind: str, facets: dict[str, str], key_before: str) -> _Group:
        group = _Group(item.key, kind, facets, key_before, store=False)
        group.add(item)
        return group

    def _record(self, group: _Group) -> DatasetRecord:
        association = self.association
        s3_uri = f"s3://{association.bucket}/{group.root}" + ("/" if group.store else "")
        path = association.local_path(group.root)
        return DatasetRecord(
            id=record_id(association.region, s3_uri), kind=group.kind, s3_uri=s3_uri, path=path,
            region=association.region, pool=association.pool, size=group.size, object_count=group.count,
            last_modified=group.newest.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), facets=group.facets,
            fileName=path, bucket=association.bucket, dask_pool=association.pool, project=association.bucket,
        )
