"""Regenerate ``example_workflows/`` (UI format + thumbnails) and ``example_workflows/api/`` (API format).

The five scenarios of the V-Express user manual, a full-frame portrait and the fast mode, each as one graph
description below, are written in both formats from the node definitions of a running ComfyUI with this pack
installed (``/object_info`` gives every node's input order, widget types and outputs, so the UI files match what
the frontend itself would save). The file name is the title the Templates browser shows::

    PYTHONPATH=. python scripts/make_example_workflows.py --url http://127.0.0.1:8188

Standard library plus Pillow, numpy and this repository's library (for the thumbnails). The inputs the workflows use
are in
``example_workflows/input/`` (see ``scripts/make_example_inputs.py``); copy them into ComfyUI's ``input/``
folder (or upload them) before running a workflow.
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
# One frame rate for every example, the same as the nodes' default and the original V-Express (30 fps).
FPS = 30.0
# Layout: five columns 400 units apart (nodes are 360 wide). Room is reserved below the widgets of the nodes that
# show a picture or a player (the frontend draws it inside the node), so no preview ever lies under another node.
COLUMNS = (0, 400, 800, 1200, 1600)
NODE_WIDTH = 360
PREVIEW_HEIGHT = {"LoadImage": 300, "LoadVideo": 300, "LoadAudio": 60, "VExpressSampler": 380,
                  "VExpressSaveVideo": 380, "VExpressSaveKps": 220}
RETARGET_Y_WITH_DRIVING = 640
# The Note goes under the audio column, below whatever else is there; the bottom right corner of the window stays
# free for the frontend's minimap.
NOTE_SIZE = (360, 260)
NOTE_GAP = 60
# The scale the workflow opens at: the whole graph (about 1960 x 1000 units) fits a 1600 x 1000 window.
VIEW = {"scale": 0.75, "offset": [40, 100]}


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
    name: str  # the file name, which the Templates browser shows as the card's title
    title: str
    note: str
    nodes: list[Node]


def _common(strategy: str, *, audio: str = "vexpress_speech.wav", driving: int | None = None,
            ref_weight: float = 1.0, audio_weight: float = 1.0, offload: str = "auto", prefix: str,
            speed: dict[str, Any] | None = None) -> list[Node]:
    retarget_links = {"reference_image": (4, 0), "frame_count": (3, 2), "fps": (3, 3)}
    if driving is not None:
        retarget_links["driving_kps"] = (driving, 0)
    # Columns in data-flow order: inputs, audio (+ driving video), kps, sampler, video. With a driving track the
    # kps column holds its nodes above RetargetKps.
    retarget_y = RETARGET_Y_WITH_DRIVING if driving is not None else 0
    return [
        Node(1, "LoadVExpressModels", (COLUMNS[0], 0),
             {"model": "V-Express", "dtype": "auto", "offload": offload, "download_missing": False}),
        Node(2, "LoadAudio", (COLUMNS[0], 240), {"audio": audio}),
        Node(3, "VExpressAudioEmbed", (COLUMNS[1], 0), {"fps": FPS}, {"pipe": (1, 0), "audio": (2, 0)}),
        Node(4, "LoadImage", (COLUMNS[0], 500), {"image": "vexpress_portrait.jpg"}),
        Node(6, "VExpressRetargetKps", (COLUMNS[2], retarget_y),
             {"strategy": strategy, "width": 512, "height": 512, "fps": FPS, "compat": "fixed"}, retarget_links),
        Node(7, "VExpressSampler", (COLUMNS[3], 0),
             {"width": 512, "height": 512, "steps": 25, "guidance_scale": 3.5, "seed": 42,
              "reference_attention_weight": ref_weight, "audio_attention_weight": audio_weight,
              "context_frames": 24, "context_overlap": 4, "compat": "fixed", "median_filter": "auto",
              **(speed or {})},
             {"pipe": (1, 0), "reference_image": (4, 0), "kps": (6, 0), "audio_embeds": (3, 0)}),
        Node(8, "VExpressSaveVideo", (COLUMNS[4], 0), {"fps": FPS, "filename_prefix": f"vexpress/{prefix}", "crf": 17},
             {"images": (7, 0), "audio": (3, 1), "fps": (7, 1)}),
    ]


def scenarios() -> list[Scenario]:
    same_person = _common("no_retarget", driving=5, prefix="same_person")
    same_person += [
        Node(9, "LoadVideo", (COLUMNS[1], 240), {"file": "vexpress_driving.mp4"}),
        Node(5, "VExpressExtractKps", (COLUMNS[2], 0), {"fps": FPS, "face": "largest"}, {"video": (9, 0)}),
        Node(10, "VExpressSaveKps", (COLUMNS[2], 230), {"filename_prefix": "vexpress/driving_kps", "format": "npz"},
             {"kps": (5, 0)}),
    ]
    other_person = _common("offset_retarget", driving=5, prefix="other_person")
    other_person.append(
        Node(5, "VExpressLoadKps", (COLUMNS[2], 0),
             {"kps_file": "vexpress_driving_other_kps.pth", "fps_if_unknown": FPS})
    )
    full_frame = _full_frame(_common("fix_face", prefix="full_frame"))
    return [
        Scenario(
            "V-Express 1 - Same person, driving video (no_retarget)",
            "Same person: driving video + no_retarget",
            "Scenario 1 (best quality): a portrait of A and a talking video of A. ExtractKps follows A's head in the "
            "driving video; RetargetKps uses the track as it is (no_retarget). SaveKps keeps the track for later "
            "runs (LoadKps). Reference / audio attention 1.0 / 1.0.",
            same_person,
        ),
        Scenario(
            "V-Express 2 - Any speech, still head (fix_face)",
            "Any audio: fix_face",
            "Scenario 2: a portrait and any speech. The face stays where it is (fix_face); only the mouth and "
            "expression follow the audio. No driving video needed.",
            _common("fix_face", prefix="fix_face"),
        ),
        Scenario(
            "V-Express 3 - Head motion of another person (offset_retarget)",
            "Other person: offset_retarget",
            "Scenario 3: a portrait of A and the head motion of B. LoadKps reads B's track (here in the original "
            "V-Express kps.pth format); offset_retarget moves A's face as B's head moves.",
            other_person,
        ),
        Scenario(
            "V-Express 4 - Stronger lip motion (attention 0.95, 3.0)",
            "Custom attention weights 0.95 / 3.0",
            "Scenario 4: stronger lip motion. reference_attention_weight 0.95 and audio_attention_weight 3.0 (the "
            "original script's defaults) make the mouth move more; 1.0 / 1.0 (the trained values, this pack's "
            "defaults) looks calmer. The authors suggest 0.9-1.0 for the reference and 1.0-3.0 for the audio.",
            _common("fix_face", ref_weight=0.95, audio_weight=3.0, prefix="attention_0.95_3.0"),
        ),
        Scenario(
            "V-Express 5 - Long speech on a small GPU (offload)",
            "Long audio with offload",
            "Scenario 5: a long clip on a small GPU. The loader's offload mode takes every network off the GPU as "
            "soon as its stage is done and keeps the conditioning in system memory, so the peak VRAM does not grow "
            "with the clip length; the video is made in overlapping 24-frame windows.",
            _common("fix_face", audio="vexpress_speech_long.mp3", offload="offload", prefix="long_audio"),
        ),
        Scenario(
            "V-Express 6 - Whole photo, face off-centre (FaceCrop, paste-back in SaveVideo)",
            "Full-frame portrait: FaceCrop + paste-back in SaveVideo",
            "Scenario 6: an ordinary photo, the person off-centre. FaceCrop cuts the face out as the square, "
            "face-centred crop the model was trained on; the crop is animated (fix_face) and SaveVideo pastes it "
            "back into the whole photo (soft edge, matched colours) while it writes, one chunk at a time, so long "
            "clips fit in memory. The video has the photo's size. PasteBack does the same into IMAGE frames.",
            full_frame,
        ),
        Scenario(
            "V-Express 7 - Faster (speed fast)",
            "Faster: speed fast",
            "Scenario 7: about a third of the time (docs/speed.md). The sampler's speed input set to fast runs "
            "DPM-Solver++ with 12 steps, DeepCache (the deep UNet layers reused for 2 of every 3 steps) and "
            "guidance over the first 60 % of the steps; balanced is the middle way, exact (the default) the "
            "original's sampler. Check the result by eye; use exact for the final video.",
            _common("fix_face", prefix="fast", speed={"speed": "fast"}),
        ),
    ]


def _full_frame(nodes: list[Node]) -> list[Node]:
    """The fix_face graph on a landscape photo: LoadImage -> FaceCrop -> (RetargetKps, Sampler) -> SaveVideo, which
    pastes the generated crops back into the photo as it writes (one chunk of full frames in memory)."""
    by_id = {node.id: node for node in nodes}
    by_id[4].widgets["image"] = "vexpress_landscape.jpg"
    by_id[6].links["reference_image"] = (5, 0)
    by_id[6].links["crop"] = (5, 1)
    by_id[7].links["reference_image"] = (5, 0)
    by_id[8].links.update({"full_image": (4, 0), "crop": (5, 1)})
    by_id[8].widgets.update({"feather": 0.1, "color_match": "clip", "max_side": 0})
    return [
        *nodes,
        Node(5, "VExpressFaceCrop", (COLUMNS[1], 240),
             {"width": 512, "height": 512, "crop_scale": 3.4, "border": "pad", "face": "largest",
              "face_detector": "auto"}, {"image": (4, 0)}),
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
            "size": [NODE_WIDTH, 46 + 26 * rows + PREVIEW_HEIGHT.get(node.cls, 0)],
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
    column = [n for n in ui_nodes if n["pos"][0] == COLUMNS[1]]
    note_pos = [COLUMNS[1], max(n["pos"][1] + n["size"][1] for n in column) + NOTE_GAP if column else 0]
    ui_nodes.append({
        "id": note_id, "type": "Note", "pos": note_pos, "size": list(NOTE_SIZE), "flags": {}, "order": len(order),
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
        "extra": {"ds": dict(VIEW)},
        "version": 0.4,
    }


# Per scenario: an accent colour and where the drawn face looks (the kps figure's offset and tilt), so the five
# template cards are told apart at a glance.
THUMBNAIL_STYLE = (
    ((90, 170, 255), (-18, 0), -0.25),
    ((255, 200, 90), (0, 0), 0.0),
    ((120, 220, 140), (22, -10), 0.3),
    ((240, 110, 150), (0, 8), 0.0),
    ((180, 140, 255), (0, 0), 0.0),
    ((90, 220, 220), (30, 20), 0.0),
    ((250, 140, 60), (-10, 14), 0.15),
)


def thumbnail(scenario: Scenario, index: int, path: Path) -> None:
    """A 480x270 card: the scenario number and title, the portrait, the scenario's kps figure and its audio."""
    import math

    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    from vexpress_model.conditioning.kps_images import draw_kps_image
    from vexpress_model.inputs.audio import decode_audio

    accent, (dx, dy), tilt = THUMBNAIL_STYLE[index % len(THUMBNAIL_STYLE)]
    canvas = Image.new("RGB", (480, 270), tuple(c // 6 for c in accent))
    draw = ImageDraw.Draw(canvas)
    try:
        big, font = ImageFont.load_default(size=40), ImageFont.load_default(size=15)
    except TypeError:  # Pillow < 10.1
        big = font = ImageFont.load_default()
    draw.text((16, 8), str(index + 1), fill=accent, font=big)
    draw.text((64, 14), "V-Express", fill=(235, 235, 235), font=font)
    draw.text((64, 34), scenario.title, fill=accent, font=font)
    image_file = next(n.widgets["image"] for n in scenario.nodes if n.cls == "LoadImage")
    portrait = Image.open(OUT / "input" / image_file).convert("RGB")
    portrait.thumbnail((150, 150))  # the whole picture (a landscape photo stays landscape)
    canvas.paste(portrait, (16 + (150 - portrait.width) // 2, 66 + (150 - portrait.height) // 2))
    centre = np.array([75.0 + dx, 85.0 + dy], dtype=np.float32)
    base = np.array([[-30.0, -8.0], [30.0, -8.0], [0.0, 30.0]], dtype=np.float32)
    rotation = np.array([[math.cos(tilt), -math.sin(tilt)], [math.sin(tilt), math.cos(tilt)]], dtype=np.float32)
    figure = Image.fromarray(draw_kps_image(150, 150, base @ rotation.T + centre))
    canvas.paste(figure, (182, 66))
    # The speech of the scenario as a waveform strip (the long clip looks long).
    audio_file = next(n.widgets["audio"] for n in scenario.nodes if n.cls == "LoadAudio")
    wave = decode_audio(OUT / "input" / audio_file).waveform.mean(axis=0)
    columns = np.array_split(np.abs(wave), 120)
    peak = max(float(np.abs(wave).max()), 1e-6)
    for x, column in enumerate(columns):
        height = 40 * float(column.max()) / peak
        draw.line([(348 + x, 140 - height), (348 + x, 140 + height)], fill=accent)
    seconds = len(wave) / decode_audio(OUT / "input" / audio_file).sample_rate
    draw.text((348, 190), f"{seconds:.0f} s of speech", fill=(235, 235, 235), font=font)
    draw.text((16, 236), scenario.name.split(" - ", 1)[1], fill=(235, 235, 235), font=font)
    canvas.save(path, quality=85, optimize=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8188", help="a running ComfyUI with this pack")
    args = parser.parse_args(argv)
    object_info = _object_info(args.url)
    (OUT / "api").mkdir(parents=True, exist_ok=True)
    for stale in [*OUT.glob("*.json"), *OUT.glob("*.jpg"), *(OUT / "api").glob("*.json")]:
        stale.unlink()  # scenarios that were renamed or removed
    for index, scenario in enumerate(scenarios()):
        (OUT / f"{scenario.name}.json").write_text(json.dumps(to_ui(scenario, object_info), indent=2) + "\n")
        (OUT / "api" / f"{scenario.name}.json").write_text(json.dumps(to_api(scenario, object_info), indent=2) + "\n")
        thumbnail(scenario, index, OUT / f"{scenario.name}.jpg")
        print(f"wrote {scenario.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
