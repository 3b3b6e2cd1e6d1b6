"""The recorded resource graph of every shipped and test stack, held to a reviewed record (tests/graphs/), so that
a restructuring provably changes nothing AWS would get, and an intended change shows in review as the resources it
touches.

Each resource is recorded as a digest of what the engine receives: its type, parent, provider, inputs, dependencies
and options. What is derived from file contents and the clock is masked: image tags (a hash of the image's
inputs) and the image digests that follow from them, the time of the one-time first sync, and where the
checkout is. Assets are recorded by their paths.

After an intended change: `python -m tests.test_graph_identity` rewrites the record; review the diff.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

import pulumi
import pytest

from stackgraph.synth import PROJECT_DIR, Graph
from tests.conftest import ALL_SHAPES, cached_graph

RECORD = Path(__file__).resolve().parent / "graphs"
# components/image.py content_tag, and the image digests the mocks derive from it
_CONTENT_TAG = re.compile(r"(?<=:)[0-9a-f]{16}\b|sha256:[0-9a-f]{64}")
_AT = re.compile(r"at\(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\)")


def _plain(value: Any) -> Any:
    if isinstance(value, pulumi.FileAsset | pulumi.FileArchive):
        return {"file": str(Path(str(value.path)).resolve().relative_to(PROJECT_DIR))}
    if isinstance(value, pulumi.AssetArchive):
        return {"archive": {name: _plain(asset) for name, asset in sorted(value.assets.items())}}
    if isinstance(value, pulumi.StringAsset):
        return {"text": value.text}
    raise TypeError(f"cannot record {type(value).__name__}")


def digests(graph: Graph) -> dict[str, str]:
    recorded = {}
    for r in graph.resources:
        body = {"type": r.type, "parent": r.parent, "provider": r.provider, "region": r.region, "inputs": r.inputs,
                "dependencies": sorted(r.dependencies), "ignore_changes": sorted(r.ignore_changes),
                "property_dependencies": {k: sorted(v) for k, v in sorted(r.property_dependencies.items())},
                "options": r.options}
        text = _CONTENT_TAG.sub("<content tag>", _AT.sub("at(<deploy time>)", json.dumps(
            body, sort_keys=True, default=_plain))).replace(str(PROJECT_DIR), "<project>")
        recorded[r.urn] = hashlib.sha256(text.encode()).hexdigest()[:16]
    return dict(sorted(recorded.items()))


def shapes() -> list[str]:
    shipped = {p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in PROJECT_DIR.glob("Pulumi.*.yaml")}
    assert shipped <= set(ALL_SHAPES), f"a shipped stack without a test shape: {shipped - set(ALL_SHAPES)}"
    return sorted(ALL_SHAPES)


@pytest.mark.parametrize("shape", shapes())
def test_the_recorded_graph_is_the_reviewed_one(shape: str) -> None:
    expected = json.loads((RECORD / f"{shape}.json").read_text())
    found = digests(cached_graph(shape))
    changed = sorted(urn for urn in found.keys() & expected.keys() if found[urn] != expected[urn])
    assert (sorted(found.keys() - expected.keys()), sorted(expected.keys() - found.keys()), changed) == ([], [], []), (
        "the graph changed (added, removed, changed); if intended, run `python -m tests.test_graph_identity`")


def test_the_record_would_see_a_changed_input() -> None:
    graph = cached_graph("dev")
    before = digests(graph)
    rule = next(r for r in graph.resources if r.name == "client-notebook-to-https")
    rule.inputs["toPort"] = 444
    after = digests(graph)
    assert [urn for urn in before if before[urn] != after[urn]] == [rule.urn]


if __name__ == "__main__":
    RECORD.mkdir(exist_ok=True)
    for name in shapes():
        (RECORD / f"{name}.json").write_text(json.dumps(digests(cached_graph(name)), indent=1) + "\n")
        print(f"recorded {name}", file=sys.stderr)
