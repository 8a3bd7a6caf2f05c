"""What an artist sees first, checked on the files for every example workflow (no ComfyUI needed).

The frontend opens a template at the view saved in it (``extra.ds``: canvas offset and scale) and draws a node's
preview (an image, a video player, the sampler's progress picture) inside the node, below its widgets. So: room
for the preview inside each node that shows one, no two nodes overlapping (title bars included), the whole graph
inside a 1600 x 1000 window at the saved view, a title on every template card (the Templates browser shows the file
name), thumbnails that tell the scenarios apart, and one frame rate everywhere.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((REPO / "example_workflows").glob("*.json"))
TITLE_BAR = 30  # the frontend draws the title bar above a node's pos
WINDOW = (1600, 1000)
TOP_BAR = 50  # the frontend's menu bar lies over the top of the canvas
MINIMAP = (1300, 730, 1560, 940)  # where the frontend (1.27) floats its minimap in a 1600 x 1000 window
ROW = 20  # the least height a widget or socket row takes
# The least room below the widgets for what these nodes show inside themselves.
PREVIEW_ROOM = {"VExpressSampler": 300, "VExpressSaveVideo": 300, "LoadImage": 250, "LoadVideo": 250,
                "VExpressSaveKps": 200}
FPS = 30.0


def _boxes(workflow: dict) -> list[tuple[str, float, float, float, float]]:
    """(label, left, top, right, bottom) in canvas units, title bar included."""
    return [(f"{n['id']}:{n['type']}", n["pos"][0], n["pos"][1] - TITLE_BAR, n["pos"][0] + n["size"][0],
             n["pos"][1] + n["size"][1]) for n in workflow["nodes"]]


@pytest.fixture(params=WORKFLOWS, ids=lambda p: p.stem)
def workflow(request) -> dict:
    return json.loads(request.param.read_text())


def test_there_are_example_workflows():
    assert len(WORKFLOWS) >= 5


def test_no_two_nodes_overlap(workflow):
    for a, b in itertools.combinations(_boxes(workflow), 2):
        apart = a[3] <= b[1] or b[3] <= a[1] or a[4] <= b[2] or b[4] <= a[2]
        assert apart, f"{a[0]} overlaps {b[0]}"


def test_nodes_with_a_preview_have_room_for_it(workflow):
    for node in workflow["nodes"]:
        room = PREVIEW_ROOM.get(node["type"])
        if room is None:
            continue
        rows = len(node["widgets_values"]) + max(len(node["inputs"]), len(node["outputs"]))
        assert node["size"][1] >= rows * ROW + room, f"{node['type']} has no room for its preview"


def test_the_whole_graph_fits_a_1600x1000_window_at_the_saved_view(workflow):
    view = workflow["extra"]["ds"]
    scale, (dx, dy) = view["scale"], view["offset"]
    assert 0.5 <= scale <= 1.0, "too small to read"
    boxes = _boxes(workflow)
    left, top = min(b[1] for b in boxes), min(b[2] for b in boxes)
    right, bottom = max(b[3] for b in boxes), max(b[4] for b in boxes)
    # screen = (canvas + offset) * scale
    assert (left + dx) * scale >= 0 and (top + dy) * scale >= TOP_BAR
    assert (right + dx) * scale <= WINDOW[0], f"right edge at {(right + dx) * scale:.0f} px"
    assert (bottom + dy) * scale <= WINDOW[1], f"bottom edge at {(bottom + dy) * scale:.0f} px"
    for label, *box in boxes:
        x0, y0, x1, y1 = ((box[0] + dx) * scale, (box[1] + dy) * scale, (box[2] + dx) * scale, (box[3] + dy) * scale)
        clear = x1 <= MINIMAP[0] or MINIMAP[2] <= x0 or y1 <= MINIMAP[1] or MINIMAP[3] <= y0
        assert clear, f"{label} lies under the minimap"


def test_template_titles_and_notes():
    """The Templates browser (frontend 1.27) titles a pack's card with the file name: make it a readable title."""
    for path in WORKFLOWS:
        assert path.stem.startswith("V-Express ") and " - " in path.stem, path.name
        assert "_" not in path.stem.split("(")[0], f"{path.name}: a title, not an identifier"
        notes = [n for n in json.loads(path.read_text())["nodes"] if n["type"] == "Note"]
        assert len(notes) == 1 and notes[0]["widgets_values"][0].strip(), path.name


def test_thumbnails_tell_the_scenarios_apart():
    from PIL import Image

    pictures = []
    for path in WORKFLOWS:
        thumbnail = path.with_suffix(".jpg")
        assert thumbnail.is_file(), thumbnail.name
        pictures.append(np.asarray(Image.open(thumbnail).convert("RGB"), dtype=np.float32))
    for (i, a), (j, b) in itertools.combinations(enumerate(pictures), 2):
        assert a.shape == b.shape
        assert np.abs(a - b).mean() > 4.0, f"{WORKFLOWS[i].stem} and {WORKFLOWS[j].stem} look alike"


def _fps_inputs() -> tuple[dict[str, float], int]:
    """Frame-rate inputs declared in nodes/*.py: ``{"<file>:<input>": default}`` of those written out, and how many
    are made by the shared ``_widgets.fps`` widget."""
    import ast

    literal, shared = {}, 0
    for path in sorted((REPO / "nodes").glob("*.py")):
        for call in ast.walk(ast.parse(path.read_text())):
            if not isinstance(call, ast.Call):
                continue
            if isinstance(call.func, ast.Attribute) and call.func.attr == "fps":
                shared += 1
            elif call.args and isinstance(call.args[0], ast.Constant) and str(call.args[0].value).startswith("fps"):
                for keyword in call.keywords:
                    if keyword.arg == "default":
                        literal[f"{path.name}:{call.args[0].value}"] = ast.literal_eval(keyword.value)
    return literal, shared


def _shared_fps_default() -> float:
    import ast

    tree = ast.parse((REPO / "nodes" / "_widgets.py").read_text())
    function = next(f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and f.name == "fps")
    return next(ast.literal_eval(k.value) for c in ast.walk(function) if isinstance(c, ast.Call)
                for k in c.keywords if k.arg == "default")


def test_one_frame_rate_in_node_defaults():
    literal, shared = _fps_inputs()
    assert len(literal) + shared >= 4
    assert set(literal.values()) <= {FPS}, literal
    if shared:
        assert _shared_fps_default() == FPS


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_one_frame_rate_in_the_examples(path):
    graph = json.loads((REPO / "example_workflows" / "api" / path.name).read_text())
    for node in graph.values():
        for name, value in node["inputs"].items():
            if name.startswith("fps") and not isinstance(value, list):
                assert value == FPS, f"{node['class_type']}.{name} = {value}"
