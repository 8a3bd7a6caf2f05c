"""End to end against a real ComfyUI server: the pack installed in ``custom_nodes``, a tiny random-weight model in
``models/vexpress/``, the stand-in face detector in ``models/insightface/``, driven over HTTP as API clients do.

Needs ``COMFYUI_PATH`` (a ComfyUI checkout, >= 0.3.64) and ``COMFYUI_PYTHON`` (the Python of an environment with
ComfyUI's requirements and this pack's); ``bash scripts/test.sh`` sets both when ``../shared/comfyui/ComfyUI`` is
beside the repository (as in CI) and builds that environment (``.venv-comfy``). Skipped with a how-to otherwise.
The server itself: see ``tests/comfy_server.py``.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.parse
from fractions import Fraction
from pathlib import Path

import pytest

from tests import comfy_server

REPO = comfy_server.REPO
PACK_FOLDER = comfy_server.PACK_FOLDER
FPS, SMALL, HOW_TO = comfy_server.FPS, comfy_server.SMALL, comfy_server.HOW_TO
_small, _expected_frames = comfy_server.small_graph, comfy_server.expected_frames
server = comfy_server.server  # the module's server fixture
PACK_NODES = (
    "LoadVExpressModels", "VExpressAudioEmbed", "VExpressExtractKps", "VExpressLoadKps", "VExpressSaveKps",
    "VExpressRetargetKps", "VExpressSampler", "VExpressSaveVideo", "VExpressFaceCrop", "VExpressPasteBack",
)
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
FIX_FACE = "V-Express 2 - Any speech, still head (fix_face).json"

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]
if not os.environ.get("COMFYUI_PATH") or not os.environ.get("COMFYUI_PYTHON"):
    pytest.skip(f"no ComfyUI to test against: {HOW_TO}", allow_module_level=True)


api = comfy_server.api


@pytest.fixture(scope="module")
def object_info(server):
    return api.get_json(server.url, "/object_info")


# ------------------------------------------------------------------------------------------ registration


def test_pack_loads_and_every_node_has_tooltips(server, object_info):
    assert "IMPORT FAILED" not in server.log_text()
    for node_id in PACK_NODES:
        info = object_info[node_id]
        assert info["python_module"] == f"custom_nodes.{PACK_FOLDER}", node_id
        assert info["category"].startswith("V-Express/")
        assert info["description"]
        for group in ("required", "optional"):
            for name, spec in info["input"].get(group, {}).items():
                assert len(spec) > 1 and spec[1].get("tooltip"), f"{node_id}.{name}"
        assert all(info["output_tooltips"]), node_id
    assert object_info["VExpressSaveVideo"]["output_node"] and object_info["VExpressSaveKps"]["output_node"]
    assert "tiny" in object_info["LoadVExpressModels"]["input"]["required"]["model"][1]["options"]
    # Core nodes keep their ids (ours never shadow them).
    assert object_info["SaveVideo"]["python_module"] == "comfy_extras.nodes_video"


ALIASES = ["talking head", "lip sync", "avatar", "portrait animation", "V-Express"]
ADVANCED = {"VExpressSampler": {"context_frames", "context_overlap", "compat", "reference_attention_weight",
                                "audio_attention_weight"},
            "LoadVExpressModels": {"offload"}, "VExpressAudioEmbed": {"compat"}, "VExpressRetargetKps": {"compat"}}


def test_search_aliases_and_advanced_inputs_where_this_comfyui_has_them(server, object_info):
    """Where core nodes carry search aliases (LoadImage) and advanced inputs (SaveAnimatedPNG's compress_level),
    as in 0.33, ours do too; where they do not (0.3.64), ours carry none either and the pack loads without a
    warning or error of its own."""
    has_aliases = "search_aliases" in object_info["LoadImage"]
    has_advanced = object_info["SaveAnimatedPNG"]["input"]["required"]["compress_level"][1].get("advanced") is True
    for node_id in PACK_NODES:
        assert object_info[node_id].get("search_aliases") == (ALIASES if has_aliases else None), node_id
    for node_id, names in ADVANCED.items():
        inputs = {**object_info[node_id]["input"]["required"], **object_info[node_id]["input"].get("optional", {})}
        marked = {name for name, spec in inputs.items() if spec[1].get("advanced")}
        assert marked == (names if has_advanced else set()), node_id
    # Start-up (up to "Starting server"): the pack shows up only in the import-time list (no traceback, no
    # message of ours, no "IMPORT FAILED", no deprecation notice naming it).
    start_up = server.log_text().split("Starting server")[0]
    about_us = [line for line in start_up.splitlines()
                if re.search(r"v-?express|traceback|import failed", line, re.IGNORECASE)]
    # (0.33 puts a coloured level name before each line)
    assert [line for line in about_us if not re.search(rf"\s[\d.]+ seconds: \S+/{PACK_FOLDER}$", line)] == []
    assert len(about_us) == 1, start_up


def test_subgraph_blueprint_is_listed_where_comfyui_has_them(server, object_info):
    """ComfyUI 0.33 lists each pack's subgraphs/*.json in the node library (GET /global_subgraphs); 0.3.64 has no
    such route. The blueprint (the sixth example's nodes, scripts/make_subgraph_blueprint.py) is served as written,
its nodes are known and its links join them."""
    blueprint = REPO / "subgraphs" / "V-Express full frame.json"
    if not (Path(os.environ["COMFYUI_PATH"]) / "app" / "subgraph_manager.py").is_file():
        with pytest.raises(api.ComfyError, match="HTTP 404"):
            api.get_json(server.url, "/global_subgraphs")
        return
    listed = api.get_json(server.url, "/global_subgraphs")
    ours = {key: entry for key, entry in listed.items() if entry["info"]["node_pack"] == f"custom_nodes.{PACK_FOLDER}"}
    assert [entry["name"] for entry in ours.values()] == [blueprint.stem]
    served = json.loads(api.get_json(server.url, f"/global_subgraphs/{next(iter(ours))}")["data"])
    assert served == json.loads(blueprint.read_text())
    (definition,) = served["definitions"]["subgraphs"]
    assert [item["type"] for item in definition["inputs"]] == ["IMAGE", "AUDIO"]
    assert [item["type"] for item in definition["outputs"]] == ["VIDEO"]
    assert all(node["type"] in object_info for node in definition["nodes"])
    node_ids = {node["id"] for node in definition["nodes"]} | {-10, -20}
    assert all(link["origin_id"] in node_ids and link["target_id"] in node_ids for link in definition["links"])


def test_templates_docs_and_translations_are_served(server):
    templates = api.get_json(server.url, "/api/workflow_templates")
    assert sorted(templates[PACK_FOLDER]) == sorted(p.stem for p in (REPO / "example_workflows").glob("*.json"))
    name = templates[PACK_FOLDER][0]
    ui = api.get_json(server.url, f"/api/workflow_templates/{PACK_FOLDER}/{urllib.parse.quote(name)}.json")
    assert ui["nodes"] and ui["links"]
    doc = api._request(f"{server.url}/extensions/{PACK_FOLDER}/docs/VExpressSampler.md").decode()
    assert doc.startswith("# V-Express Sampler")
    i18n = api.get_json(server.url, "/i18n")
    for lang in ("en", "de", "zh"):
        assert "VExpressSampler" in i18n[lang]["nodeDefs"], lang


def _ui_to_api(ui: dict, object_info: dict) -> dict:
    """What the frontend queues for a UI-format workflow (widget values by input order, links by slot)."""
    links = {link[0]: link for link in ui["links"]}
    graph = {}
    for node in ui["nodes"]:
        if node["type"] == "Note":
            continue
        info = object_info[node["type"]]
        values = list(node["widgets_values"])
        inputs = {}
        linked = {item["name"]: links[item["link"]] for item in node["inputs"] if item.get("link") is not None}
        for group in ("required", "optional"):
            for name in info["input_order"].get(group, []):
                spec = info["input"][group][name]
                kind = spec[0] if isinstance(spec[0], str) else "COMBO"
                options = spec[1] if len(spec) > 1 else {}
                if kind in WIDGET_TYPES:
                    value = values.pop(0)
                    if options.get("control_after_generate"):
                        values.pop(0)
                    if options.get("image_upload") or options.get("video_upload"):
                        values.pop(0)
                    if options.get("audio_upload"):
                        del values[:2]
                    if name not in linked:
                        inputs[name] = value
                if name in linked:
                    inputs[name] = [str(linked[name][1]), linked[name][2]]
        graph[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return graph


@pytest.mark.parametrize("path", sorted((REPO / "example_workflows").glob("*.json")), ids=lambda p: p.stem)
def test_ui_workflows_queue_as_their_api_copies(path, object_info):
    converted = _ui_to_api(json.loads(path.read_text()), object_info)
    shipped = json.loads((REPO / "example_workflows" / "api" / path.name).read_text())
    assert converted == {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in shipped.items()}


# -------------------------------------------------------------------------------------------- generation


@pytest.mark.parametrize("path", sorted((REPO / "example_workflows" / "api").glob("*.json")), ids=lambda p: p.stem)
def test_example_workflow_makes_an_h264_aac_video(server, path):
    import av

    graph = _small(json.loads(path.read_text()))
    audio_file = next(n["inputs"]["audio"] for n in graph.values() if n["class_type"] == "LoadAudio")
    entry, files = server.run(graph)
    videos = [f for f in files if f.suffix == ".mp4"]
    assert len(videos) == 1, files
    save_id = next(k for k, n in graph.items() if n["class_type"] == "VExpressSaveVideo")
    assert entry["outputs"][save_id]["animated"] == [True]
    frames = _expected_frames(audio_file, FPS)
    with av.open(str(videos[0])) as container:
        video, sound = container.streams.video[0], container.streams.audio[0]
        assert video.codec_context.name == "h264" and video.codec_context.pix_fmt == "yuv420p"
        assert sound.codec_context.name == "aac"
        # A full-frame workflow (FaceCrop -> SaveVideo pasting back) writes the photo's size:
        # tests/test_comfyui_full_frame.py.
        full_frame = any(n["class_type"] == "VExpressFaceCrop" for n in graph.values())
        assert full_frame or (video.codec_context.width, video.codec_context.height) == (64, 64)
        assert video.average_rate == Fraction(FPS).limit_denominator(1000)
        decoded = sum(1 for _ in container.decode(video))
        prompt = json.loads(container.metadata["prompt"])  # the graph that made it, as core SaveVideo keeps it
    assert decoded == frames
    assert {k: n["class_type"] for k, n in prompt.items()} == {k: n["class_type"] for k, n in graph.items()}
    if any(n["class_type"] == "VExpressSaveKps" for n in graph.values()):
        assert any(f.suffix == ".npz" for f in (server.base / "output" / "vexpress").iterdir())


def test_video_carries_the_workflow_the_ui_sends(server):
    """The frontend queues the UI workflow as extra_pnginfo; it lands in the MP4 next to the prompt."""
    import av

    name = FIX_FACE
    graph = _small(json.loads((REPO / "example_workflows" / "api" / name).read_text()), VExpressSampler={"seed": 77})
    workflow = json.loads((REPO / "example_workflows" / name).read_text())
    answer = api.post_json(server.url, "/prompt", {"prompt": graph, "client_id": "vexpress-test",
                                                   "extra_data": {"extra_pnginfo": {"workflow": workflow}}})
    entry = api.wait(server.url, answer["prompt_id"], 600)
    assert api.error_of(entry) is None, server.log_text()[-4000:]
    video = next(p for p in (api.download(server.url, item, server.base / "downloads")
                             for item in api.output_files(entry)) if p.suffix == ".mp4")
    with av.open(str(video)) as container:
        tags = dict(container.metadata)
    assert json.loads(tags["workflow"]) == workflow
    assert json.loads(tags["prompt"])["1"]["class_type"] == graph["1"]["class_type"]


def test_second_run_reuses_the_loaded_networks(server):
    graph = _small(json.loads((REPO / "example_workflows" / "api" / FIX_FACE).read_text()))
    server.run(_small(graph, VExpressSampler={"seed": 1001}))
    before = server.log_text().count("Requested to load")
    entry, _ = server.run(_small(graph, VExpressSampler={"seed": 1002}))
    cached = next(data["nodes"] for event, data in entry["status"]["messages"] if event == "execution_cached")
    assert "1" in cached  # the loader's output (the pipe) came from the cache
    assert server.log_text().count("Requested to load") == before, "networks were loaded again"


def test_interrupt_stops_a_long_sampler_run_promptly(server):
    graph = _small(json.loads((REPO / "example_workflows" / "api" / FIX_FACE).read_text()),
                   VExpressSampler={"steps": 500, "seed": 4242})
    marker = server.log_text().count("sampling ")
    prompt_id = api.queue(server.url, graph)
    deadline = time.monotonic() + 300
    while server.log_text().count("sampling ") == marker:  # the sampler logs "sampling N frames ..." as it starts
        assert time.monotonic() < deadline, "the sampler never started"
        time.sleep(0.2)
    time.sleep(1.0)
    started = time.monotonic()
    api.interrupt(server.url)
    entry = api.wait(server.url, prompt_id, timeout=120)
    stopped_after = time.monotonic() - started
    events = [event for event, _ in entry["status"]["messages"]]
    assert "execution_interrupted" in events, events
    interrupted = next(data for event, data in entry["status"]["messages"] if event == "execution_interrupted")
    assert interrupted["node_type"] == "VExpressSampler"
    assert stopped_after < 20, f"the sampler took {stopped_after:.1f} s to stop"
    # The server is usable afterwards.
    api.get_json(server.url, "/queue")
