"""Regenerate ``example_workflows/`` (UI format + thumbnails) and ``example_workflows/api/`` (API format).

The five scenarios of the V-Express user manual, each as one graph description below, are written in both formats
from the node definitions of a running ComfyUI with this pack installed (``/object_info`` gives every node's input
order, widget types and outputs, so the UI files match what the frontend itself would save)::

    PYTHONPATH=. python scripts/make_example_workflows.py --url http://127.0.0.1:8188

Standard library plus Pillow, numpy and this repository's library (for the thumbnails). The inputs the workflows
use are in ``example_workflows/input/`` (see ``scripts/make_example_inputs.py``); copy them into ComfyUI's
``input/`` folder (or upload them) before running a workflow.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "example_workflows"
PACK_VERSION = "0.1.0"
PACK_ID = "comfyui-vexpress"
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


@dataclass
class Node:
    id: int
    cls: str
    pos: tuple[int, int]
    widgets: dict[str, Any] = field(default_factory=dict)
    links: dict[str, tuple[int, int]] = field(default_factory=dict)
    title: str | None = None


@dataclass
class Scenario:
    name: str
    title: str
    note: str
    nodes: list[Node]


def _common(strategy: str, *, audio: str = "vexpress_speech.wav", driving: int | None = None,
            ref_weight: float = 1.0, audio_weight: float = 1.0, offload: str = "auto", prefix: str) -> list[Node]:
    retarget_links = {"reference_image": (4, 0), "frame_count": (3, 2), "fps": (3, 3)}
    if driving is not None:
        retarget_links["driving_kps"] = (driving, 0)
    return [
        Node(1, "LoadVExpressModels", (0, 0),
             {"model": "V-Express", "dtype": "auto", "offload": offload, "download_missing": False}),
        Node(2, "LoadAudio", (0, 260), {"audio": audio}),
        Node(3, "VExpressAudioEmbed", (420, 60), {"fps": 25.0}, {"pipe": (1, 0), "audio": (2, 0)}),
        Node(4, "LoadImage", (0, 480), {"image": "vexpress_portrait.jpg"}),
        Node(6, "VExpressRetargetKps", (840, 380),
             {"strategy": strategy, "width": 512, "height": 512, "compat": "fixed"}, retarget_links),
        Node(7, "VExpressSampler", (1260, 0),
             {"width": 512, "height": 512, "steps": 25, "guidance_scale": 3.5, "seed": 42,
              "reference_attention_weight": ref_weight, "audio_attention_weight": audio_weight,
              "context_frames": 24, "context_overlap": 4, "compat": "fixed", "median_filter": "auto"},
             {"pipe": (1, 0), "reference_image": (4, 0), "kps": (6, 0), "audio_embeds": (3, 0)}),
        Node(8, "VExpressSaveVideo", (1680, 0), {"filename_prefix": f"vexpress/{prefix}", "crf": 17},
             {"images": (7, 0), "audio": (3, 1), "fps": (7, 1)}),
    ]


def scenarios() -> list[Scenario]:
    same_person = _common("no_retarget", driving=5, prefix="same_person")
    same_person += [
        Node(9, "LoadVideo", (0, 880), {"file": "vexpress_driving.mp4"}),
        Node(5, "VExpressExtractKps", (420, 640), {"fps": 25.0, "face": "largest"}, {"video": (9, 0)}),
        Node(10, "VExpressSaveKps", (840, 800), {"filename_prefix": "vexpress/driving_kps", "format": "npz"},
             {"kps": (5, 0)}),
    ]
    other_person = _common("offset_retarget", driving=5, prefix="other_person")
    other_person.append(
        Node(5, "VExpressLoadKps", (420, 640), {"kps_file": "vexpress_driving_other_kps.pth", "fps_if_unknown": 30.0})
    )
    full_frame = _full_frame(_common("fix_face", prefix="full_frame"))
    return [
        Scenario(
            "vexpress_same_person_no_retarget",
            "Same person: driving video + no_retarget",
            "Scenario 1 (best quality): a portrait of A and a talking video of A. ExtractKps follows A's head in the "
            "driving video; RetargetKps uses the track as it is (no_retarget). SaveKps keeps the track for later "
            "runs (LoadKps). Reference / audio attention 1.0 / 1.0.",
            same_person,
        ),
        Scenario(
            "vexpress_any_audio_fix_face",
            "Any audio: fix_face",
            "Scenario 2: a portrait and any speech. The face stays where it is (fix_face); only the mouth and "
            "expression follow the audio. No driving video needed.",
            _common("fix_face", prefix="fix_face"),
        ),
        Scenario(
            "vexpress_other_person_offset_retarget",
            "Other person: offset_retarget",
            "Scenario 3: a portrait of A and the head motion of B. LoadKps reads B's track (here in the original "
            "V-Express kps.pth format); offset_retarget moves A's face as B's head moves.",
            other_person,
        ),
        Scenario(
            "vexpress_custom_attention_weights",
            "Custom attention weights 0.95 / 3.0",
            "Scenario 4: stronger lip motion. reference_attention_weight 0.95 and audio_attention_weight 3.0 (the "
            "original script's defaults) make the mouth move more; 1.0 / 1.0 (the trained values, this pack's "
            "defaults) looks calmer. The authors suggest 0.9-1.0 for the reference and 1.0-3.0 for the audio.",
            _common("fix_face", ref_weight=0.95, audio_weight=3.0, prefix="attention_0.95_3.0"),
        ),
        Scenario(
            "vexpress_long_audio_offload",
            "Long audio with offload",
            "Scenario 5: a long clip on a small GPU. The loader's offload mode takes every network off the GPU as "
            "soon as its stage is done and keeps the conditioning in system memory, so the peak VRAM does not grow "
            "with the clip length; the video is made in overlapping 24-frame windows.",
            _common("fix_face", audio="vexpress_speech_long.mp3", offload="offload", prefix="long_audio"),
        ),
        Scenario(
            "vexpress_full_frame_portrait",
            "Full-frame portrait: FaceCrop + PasteBack",
            "Scenario 6: an ordinary photo, the person off-centre. FaceCrop cuts the face out as the square, "
            "face-centred crop the model was trained on; the crop is animated (fix_face) and PasteBack blends it "
            "back into the whole photo with a soft edge and matched colours. The video has the photo's size.",
            full_frame,
        ),
    ]


def _full_frame(nodes: list[Node]) -> list[Node]:
    """The fix_face graph on a landscape photo: LoadImage -> FaceCrop -> (RetargetKps, Sampler) -> PasteBack."""
    by_id = {node.id: node for node in nodes}
    by_id[4].widgets["image"] = "vexpress_landscape.jpg"
    by_id[6].links["reference_image"] = (5, 0)
    by_id[7].links["reference_image"] = (5, 0)
    by_id[8].links["images"] = (9, 0)
    by_id[8].pos = (1680, 420)
    return [
        *nodes,
        Node(5, "VExpressFaceCrop", (420, 480),
             {"width": 512, "height": 512, "crop_scale": 3.4, "border": "pad", "face": "largest",
              "face_detector": "auto"}, {"image": (4, 0)}),
        Node(9, "VExpressPasteBack", (1680, 0), {"feather": 0.1, "color_match": "clip", "max_side": 0},
             {"images": (7, 0), "original_image": (4, 0), "crop": (5, 1)}),
    ]


# ---------------------------------------------------------------------------------------------- writing


def _object_info(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url.rstrip("/") + "/object_info", timeout=60) as response:
        return json.loads(response.read())


def _inputs(info: dict[str, Any]) -> list[tuple[str, str, dict[str, Any], bool]]:
    """(name, type, options, optional) in the node's input order."""
    order = info.get("input_order", {})
    result = []
    for group in ("required", "optional"):
        for name in order.get(group, list(info["input"].get(group, {}))):
            spec = info["input"][group][name]
            kind = spec[0] if isinstance(spec[0], str) else "COMBO"
            result.append((name, kind, spec[1] if len(spec) > 1 else {}, group == "optional"))
    return result


def to_api(scenario: Scenario, object_info: dict[str, Any]) -> dict[str, Any]:
    graph = {}
    for node in sorted(scenario.nodes, key=lambda n: n.id):
        info = object_info[node.cls]
        inputs: dict[str, Any] = {}
        for name, kind, options, _optional in _inputs(info):
            if name in node.links:
                source, slot = node.links[name]
                inputs[name] = [str(source), slot]
            elif kind in WIDGET_TYPES:
                inputs[name] = node.widgets.get(name, options.get("default"))
        unknown = set(node.widgets) - set(inputs)
        if unknown:
            raise ValueError(f"{scenario.name}: {node.cls} has no widget(s) {sorted(unknown)}")
        graph[str(node.id)] = {"class_type": node.cls, "inputs": inputs,
                               "_meta": {"title": node.title or info.get("display_name") or node.cls}}
    return graph


def to_ui(scenario: Scenario, object_info: dict[str, Any]) -> dict[str, Any]:
    links: list[list[Any]] = []
    ui_nodes: list[dict[str, Any]] = []
    outputs_links: dict[tuple[int, int], list[int]] = {}
    by_id = {node.id: node for node in scenario.nodes}
    # Execution order: a topological order of the graph (the frontend stores one as "order").
    order: list[int] = []

    def visit(node_id: int) -> None:
        if node_id in order:
            return
        for source, _slot in by_id[node_id].links.values():
            visit(source)
        order.append(node_id)

    for node in scenario.nodes:
        visit(node.id)

    for node in sorted(scenario.nodes, key=lambda n: n.id):
        info = object_info[node.cls]
        sockets, converted, widgets_values = [], [], []
        for name, kind, options, optional in _inputs(info):
            link_id = None
            if name in node.links:
                source, slot = node.links[name]
                link_id = len(links) + 1
                links.append([link_id, source, slot, node.id, None, kind])
                outputs_links.setdefault((source, slot), []).append(link_id)
            if kind in WIDGET_TYPES:
                value = node.widgets.get(name, options.get("default"))
                widgets_values.append(value)
                if options.get("control_after_generate"):
                    widgets_values.append("fixed")
                if options.get("image_upload") or options.get("video_upload"):
                    widgets_values.append("image")
                if options.get("audio_upload"):
                    widgets_values += [None, None]
                if link_id is not None:
                    converted.append({"name": name, "type": kind, "widget": {"name": name}, "link": link_id})
            else:
                entry = {"name": name, "type": kind, "link": link_id}
                if optional:
                    entry["shape"] = 7
                sockets.append(entry)
        inputs = sockets + converted
        for slot, entry in enumerate(inputs):
            if entry["link"] is not None:
                links[entry["link"] - 1][4] = slot
        outputs = []
        for slot, (kind, name) in enumerate(zip(info["output"], info["output_name"])):
            outputs.append({"name": name, "type": kind, "slot_index": slot,
                            "links": outputs_links.get((node.id, slot), [])})
        core = not info.get("python_module", "").startswith("custom_nodes")
        rows = len(widgets_values) + max(len(inputs), len(outputs))
        ui_nodes.append({
            "id": node.id,
            "type": node.cls,
            "pos": list(node.pos),
            "size": [360, 46 + 26 * rows],
            "flags": {},
            "order": order.index(node.id),
            "mode": 0,
            "inputs": inputs,
            "outputs": outputs,
            "properties": {"Node name for S&R": node.cls,
                           "cnr_id": "comfy-core" if core else PACK_ID,
                           "ver": object_info.get("_comfyui_version", "0.3.64") if core else PACK_VERSION},
            "widgets_values": widgets_values,
            **({"title": node.title} if node.title else {}),
        })
    # Fix the output link lists, which were filled while walking the inputs.
    for ui_node in ui_nodes:
        for slot, output in enumerate(ui_node["outputs"]):
            output["links"] = outputs_links.get((ui_node["id"], slot), [])
    note_id = max(by_id) + 1
    ui_nodes.append({
        "id": note_id, "type": "Note", "pos": [1260, 560], "size": [420, 180], "flags": {}, "order": len(order),
        "mode": 0, "inputs": [], "outputs": [], "properties": {}, "color": "#432", "bgcolor": "#653",
        "widgets_values": [f"{scenario.title}\n\n{scenario.note}\n\nInputs: example_workflows/input/ of the "
                           "V-Express pack (copy them into ComfyUI's input folder)."],
    })
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{PACK_ID}/{scenario.name}")),
        "revision": 0,
        "last_node_id": note_id,
        "last_link_id": len(links),
        "nodes": ui_nodes,
        "links": links,
        "groups": [],
        "config": {},
        "extra": {"ds": {"scale": 0.75, "offset": [40, 40]}},
        "version": 0.4,
    }


def thumbnail(scenario: Scenario, path: Path) -> None:
    """A 480x270 picture: the portrait, the V-Kps figure of the scenario, and its title."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    from vexpress_model.conditioning.kps_images import draw_kps_image

    canvas = Image.new("RGB", (480, 270), (24, 26, 32))
    portrait = Image.open(OUT / "input" / "vexpress_portrait.jpg").convert("RGB").resize((200, 200))
    canvas.paste(portrait, (20, 36))
    kps = np.array([[70.0, 80.0], [130.0, 80.0], [100.0, 118.0]], dtype=np.float32)
    figure = Image.fromarray(draw_kps_image(200, 200, kps))
    canvas.paste(figure, (250, 36))
    draw = ImageDraw.Draw(canvas)
    try:
        font = ImageFont.load_default(size=16)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    draw.text((20, 12), "V-Express", fill=(255, 200, 90), font=font)
    draw.text((20, 262), scenario.title, fill=(235, 235, 235), font=font, anchor="ls")
    canvas.save(path, quality=85, optimize=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8188", help="a running ComfyUI with this pack")
    args = parser.parse_args(argv)
    object_info = _object_info(args.url)
    (OUT / "api").mkdir(parents=True, exist_ok=True)
    for scenario in scenarios():
        (OUT / f"{scenario.name}.json").write_text(json.dumps(to_ui(scenario, object_info), indent=2) + "\n")
        (OUT / "api" / f"{scenario.name}.json").write_text(json.dumps(to_api(scenario, object_info), indent=2) + "\n")
        thumbnail(scenario, OUT / f"{scenario.name}.jpg")
        print(f"wrote {scenario.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
