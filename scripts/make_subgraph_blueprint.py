"""Regenerate ``subgraphs/V-Express full frame.json``: the full-frame pipeline as one subgraph blueprint.

ComfyUI (0.33 and later: ``app/subgraph_manager.py``) lists every ``<pack>/subgraphs/*.json`` in the node library,
where it is placed like a node. This one is the sixth example workflow (``example_workflows/V-Express 6 ...``) with
its two loaders taken out: a photo (IMAGE) and speech (AUDIO) go in, FaceCrop, the model loader, AudioEmbed,
RetargetKps, the sampler and SaveVideo (which pastes the face back into the photo while it writes) run inside, and
the saved VIDEO comes out. The example is the source of truth for the nodes, their widget values and layout, so
regenerate this after ``scripts/make_example_workflows.py``::

    python scripts/make_subgraph_blueprint.py

Standard library only.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SOURCE = (REPO / "example_workflows"
          / "V-Express 6 - Whole photo, face off-centre (FaceCrop, paste-back in SaveVideo).json")
TARGET = REPO / "subgraphs" / "V-Express full frame.json"
NAME = "V-Express full frame"
CATEGORY = "V-Express"
DESCRIPTION = (
    "Talking head from a whole photo and speech: finds the face, animates it (still head, lip sync) and pastes it "
    "back into the photo while saving the H.264 video."
)
# The subgraph's inputs, in order: the example's loader node type that feeds it, its name and type.
INPUTS = (("LoadImage", "image", "IMAGE"), ("LoadAudio", "audio", "AUDIO"))
OUTPUT = ("VExpressSaveVideo", "video", "VIDEO")
# Widgets of inner nodes shown on the subgraph node itself (node type, widget name).
PROMOTED = (("LoadVExpressModels", "model"), ("VExpressSampler", "steps"), ("VExpressSampler", "seed"),
            ("VExpressSaveVideo", "filename_prefix"))
INPUT_NODE_ID, OUTPUT_NODE_ID = -10, -20
NAMESPACE = uuid.UUID("5b0e7a52-9f57-4f5e-8c39-3b1f0f6c2a11")  # fixed: regenerating gives the same ids


def _id(name: str) -> str:
    return str(uuid.uuid5(NAMESPACE, name))


def blueprint(workflow: dict[str, Any]) -> dict[str, Any]:
    by_type = {node["type"]: node for node in workflow["nodes"]}
    fed_by = {by_type[loader]["id"]: slot for slot, (loader, _, _) in enumerate(INPUTS)}
    inner = [node for node in workflow["nodes"] if node["id"] not in fed_by and node["type"] != "Note"]
    inner_ids = {node["id"] for node in inner}
    links, input_links = [], {slot: [] for slot in range(len(INPUTS))}
    for link_id, origin, origin_slot, target, target_slot, kind in workflow["links"]:
        if target not in inner_ids:
            continue
        if origin in fed_by:
            input_links[fed_by[origin]].append(link_id)
            origin, origin_slot = INPUT_NODE_ID, fed_by[origin]
        links.append({"id": link_id, "origin_id": origin, "origin_slot": origin_slot, "target_id": target,
                      "target_slot": target_slot, "type": kind})
    out_link = max(link["id"] for link in links) + 1
    saver = by_type[OUTPUT[0]]
    saver["outputs"][0]["links"] = [out_link]
    links.append({"id": out_link, "origin_id": saver["id"], "origin_slot": 0, "target_id": OUTPUT_NODE_ID,
                  "target_slot": 0, "type": OUTPUT[2]})
    left = min(node["pos"][0] for node in inner) - 200
    right = max(node["pos"][0] + node["size"][0] for node in inner) + 80
    definition = {
        "id": _id(NAME), "version": 1,
        "state": {"lastGroupId": 0, "lastNodeId": max(inner_ids), "lastLinkId": out_link, "lastRerouteId": 0},
        "revision": 0, "config": {}, "name": NAME, "category": CATEGORY, "description": DESCRIPTION,
        "inputNode": {"id": INPUT_NODE_ID, "bounding": [left, 0, 120, 80]},
        "outputNode": {"id": OUTPUT_NODE_ID, "bounding": [right, 0, 120, 60]},
        "inputs": [{"id": _id(f"input {name}"), "name": name, "type": kind, "linkIds": input_links[slot],
                    "localized_name": name, "pos": [left + 100, 20 + 20 * slot]}
                   for slot, (_, name, kind) in enumerate(INPUTS)],
        "outputs": [{"id": _id(f"output {OUTPUT[1]}"), "name": OUTPUT[1], "type": OUTPUT[2], "linkIds": [out_link],
                     "localized_name": OUTPUT[1], "pos": [right + 20, 20]}],
        "widgets": [], "nodes": inner, "groups": [], "links": links, "extra": {},
    }
    instance = {
        "id": 1, "type": definition["id"], "pos": [0, 0], "size": [360, 180], "flags": {}, "order": 0, "mode": 0,
        "inputs": [{"name": name, "localized_name": name, "type": kind, "link": None} for _, name, kind in INPUTS],
        "outputs": [{"name": OUTPUT[1], "localized_name": OUTPUT[1], "type": OUTPUT[2], "links": []}],
        "title": NAME,
        "properties": {"proxyWidgets": [[str(by_type[node_type]["id"]), widget] for node_type, widget in PROMOTED]},
        "widgets_values": [],
    }
    return {"revision": 0, "last_node_id": 1, "last_link_id": 0, "nodes": [instance], "links": [],
            "version": 0.4, "definitions": {"subgraphs": [definition]}, "extra": {}}


def main() -> int:
    TARGET.parent.mkdir(exist_ok=True)
    TARGET.write_text(json.dumps(blueprint(json.loads(SOURCE.read_text())), indent=2) + "\n")
    print(f"wrote {TARGET.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
