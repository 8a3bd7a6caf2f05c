"""The node pack's files checked without ComfyUI (these run in CI): import safety, schemas read from the source,
locales, node docs, and the example workflows in both formats."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fake_comfy_api import ComfyApiHandler, load_api_example, serve

REPO = Path(__file__).resolve().parents[1]
NODE_FILES = sorted((REPO / "nodes").glob("*.py"))
WORKFLOWS = REPO / "example_workflows"
LANGUAGES = ("en", "de", "zh")
# Core node types the example workflows may use besides the pack's own.
CORE_TYPES = {"LoadImage", "LoadAudio", "LoadVideo", "PreviewImage", "CreateVideo", "SaveVideo", "Note"}
FILE_WIDGETS = {"LoadImage": "image", "LoadAudio": "audio", "LoadVideo": "file", "VExpressLoadKps": "kps_file"}


# ------------------------------------------------------------------------------------------- the source


def _schema_calls() -> dict[str, dict]:
    """node_id -> {inputs: [input id], outputs: [output id], file} read from each ``define_schema`` in nodes/*.py:
    its ``inputs = [...]`` and ``outputs = [...]`` lists and the ``NodeTexts(node_id, CATEGORY)`` that words them
    (the texts themselves are in locales/en/nodeDefs.json)."""
    found: dict[str, dict] = {}
    for path in NODE_FILES:
        tree = ast.parse(path.read_text(), filename=str(path))
        for function in ast.walk(tree):
            if not (isinstance(function, ast.FunctionDef) and function.name == "define_schema"):
                continue
            lists = {
                item.targets[0].id: item.value.elts
                for item in function.body
                if isinstance(item, ast.Assign) and isinstance(item.value, ast.List)
            }
            texts = next(
                call for call in ast.walk(function)
                if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "NodeTexts"
            )
            entry = {"inputs": [], "outputs": [], "file": path.name}
            for group in ("inputs", "outputs"):
                for item in lists[group]:
                    if getattr(item.func, "id", None) == "marked_advanced":  # the input it marks
                        item = item.args[0]
                    # A shared widget (nodes/_widgets.py) is named after its input unless its id is given.
                    ident = ast.literal_eval(item.args[0]) if item.args else getattr(item.func, "attr", None)
                    entry[group].append(ident)
            found[ast.literal_eval(texts.args[0])] = entry
    return found


SCHEMAS = _schema_calls()
ENGLISH = json.loads((REPO / "locales" / "en" / "nodeDefs.json").read_text(encoding="utf-8"))


def test_node_ids_carry_the_pack_name():
    assert set(SCHEMAS) == {
        "LoadVExpressModels", "VExpressAudioEmbed", "VExpressExtractKps", "VExpressLoadKps", "VExpressSaveKps",
        "VExpressRetargetKps", "VExpressSampler", "VExpressSaveVideo", "VExpressFaceCrop", "VExpressPasteBack",
    }
    display = {node: ENGLISH[node]["display_name"] for node in SCHEMAS}
    assert display["VExpressExtractKps"] == "ExtractKps" and display["VExpressRetargetKps"] == "RetargetKps"
    assert display["VExpressAudioEmbed"] == "AudioEmbed" and display["VExpressSaveVideo"] == "SaveVideo"


def test_every_input_and_output_of_the_source_has_its_english_text():
    assert set(ENGLISH) == set(SCHEMAS)
    """Every input the schemas declare has a tooltip, and every output a name and a tooltip, in the one file the
    schemas take their words from (nodes/_texts.py): no input without help, no text for an input that is gone."""
    for node, entry in SCHEMAS.items():
        english = ENGLISH[node]
        assert len(english["description"]) > 40, node
        assert sorted(english["inputs"]) == sorted(entry["inputs"]), f"{node}: inputs differ from the locale's"
        for ident in entry["inputs"]:
            assert english["inputs"][ident]["name"] == ident and english["inputs"][ident]["tooltip"], (node, ident)
        assert sorted(english["outputs"]) == [str(i) for i in range(len(entry["outputs"]))], node
        for text in english["outputs"].values():
            assert text["name"] and text["tooltip"], node


def test_only_the_shim_imports_comfyui():
    comfy_modules = ("comfy", "comfy_api", "folder_paths", "comfy_extras", "latent_preview", "nodes", "server")
    for path in NODE_FILES + [REPO / "__init__.py"]:
        if path.name == "_comfy.py":
            continue
        tree = ast.parse(path.read_text())
        for item in ast.walk(tree):
            names = []
            if isinstance(item, ast.Import):
                names = [alias.name for alias in item.names]
            elif isinstance(item, ast.ImportFrom) and item.level == 0 and item.module:
                names = [item.module]
            for name in names:
                if name.split(".")[0] in comfy_modules:
                    pytest.fail(f"{path.name} imports {name}; ComfyUI is imported only in nodes/_comfy.py")


def _absolute_library_imports(path: Path) -> list[str]:
    """Imports of ``vexpress_model`` by its top-level name in ``path`` (a bundled copy must never do that)."""
    found = []
    for item in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names = []
        if isinstance(item, ast.Import):
            names = [alias.name for alias in item.names]
        elif isinstance(item, ast.ImportFrom) and item.level == 0 and item.module:
            names = [item.module]
        found += [f"{path.relative_to(REPO)}:{item.lineno} {n}" for n in names if n.split(".")[0] == "vexpress_model"]
    return found


def test_the_pack_and_its_library_import_the_library_relatively():
    """A clone into custom_nodes works with nothing installed or registered: the nodes reach the bundled library as
    ``..vexpress_model`` and the library reaches itself relatively, so ``import vexpress_model`` is never needed."""
    files = NODE_FILES + [REPO / "__init__.py"] + sorted((REPO / "vexpress_model").rglob("*.py"))
    offenders = [hit for path in files for hit in _absolute_library_imports(path)]
    assert offenders == []
    root = (REPO / "__init__.py").read_text()
    assert "sys.modules" not in root and "sys.path" not in root


def test_pack_imports_outside_comfyui_without_heavy_modules():
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('vx_pack_probe', {str(REPO / '__init__.py')!r},"
        f" submodule_search_locations=[{str(REPO)!r}])\n"
        "module = importlib.util.module_from_spec(spec); sys.modules['vx_pack_probe'] = module\n"
        "spec.loader.exec_module(module)\n"
        "print(module.WEB_DIRECTORY, hasattr(module, 'comfy_entrypoint'),"
        " [m for m in ('torch', 'numpy', 'insightface', 'onnxruntime', 'av') if m in sys.modules])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", check=True)
    assert result.stdout.strip() == "./web False []", result.stderr


# ----------------------------------------------------------------------------------------- docs and locales


def test_every_node_has_a_doc_page():
    for node in SCHEMAS:
        page = REPO / "web" / "docs" / f"{node}.md"
        assert page.is_file(), f"missing {page}"
        assert page.read_text().startswith("# "), page


def _locale(lang: str, name: str) -> dict:
    return json.loads((REPO / "locales" / lang / name).read_text(encoding="utf-8"))


@pytest.mark.parametrize("lang", LANGUAGES)
def test_translations_have_exactly_the_english_keys(lang):
    english = _locale("en", "nodeDefs.json")
    other = _locale(lang, "nodeDefs.json")
    assert set(other) == set(english)
    for node, entry in english.items():
        assert other[node]["display_name"] and other[node]["description"]
        for group in ("inputs", "outputs"):
            assert set(other[node][group]) == set(entry[group]), f"{lang} {node} {group}"
            for key, value in other[node][group].items():
                assert value["name"] and value["tooltip"], f"{lang} {node} {group} {key}"
    assert "nodeCategories" in _locale(lang, "main.json")


# ------------------------------------------------------------------------------------------------ workflows


def _ui_workflows() -> list[Path]:
    return sorted(WORKFLOWS.glob("*.json"))


def test_seven_scenarios_each_with_thumbnail_and_api_copy():
    names = [path.stem for path in _ui_workflows()]
    assert len(names) == 7
    for name in names:
        assert any((WORKFLOWS / f"{name}{ext}").is_file() for ext in (".jpg", ".png", ".webp")), name
        assert (WORKFLOWS / "api" / f"{name}.json").is_file(), name


@pytest.mark.parametrize("path", _ui_workflows(), ids=lambda p: p.stem)
def test_ui_and_api_workflows_describe_the_same_graph(path):
    ui = json.loads(path.read_text())
    api = json.loads((WORKFLOWS / "api" / path.name).read_text())
    nodes = {str(n["id"]): n for n in ui["nodes"] if n["type"] != "Note"}
    assert set(nodes) == set(api)
    links = {link[0]: link for link in ui["links"]}
    for node_id, entry in api.items():
        ui_node = nodes[node_id]
        assert ui_node["type"] == entry["class_type"]
        assert entry["class_type"] in SCHEMAS or entry["class_type"] in CORE_TYPES
        api_links = {name: value for name, value in entry["inputs"].items() if isinstance(value, list)}
        ui_links = {}
        for slot, item in enumerate(ui_node["inputs"]):
            if item.get("link") is not None:
                link = links[item["link"]]
                assert link[3] == ui_node["id"] and link[4] == slot
                ui_links[item["name"]] = [str(link[1]), link[2]]
        assert ui_links == api_links, f"{path.stem} node {node_id}"
        widgets = [v for k, v in entry["inputs"].items() if not isinstance(v, list)]
        values = list(ui_node["widgets_values"])
        for value in widgets:  # the API values appear in the UI widgets, in order
            assert value in values, f"{path.stem} node {node_id}: {value!r} not in {values}"
            values = values[values.index(value) + 1 :]


@pytest.mark.parametrize("path", sorted((WORKFLOWS / "api").glob("*.json")), ids=lambda p: p.stem)
def test_api_workflows_use_the_shipped_inputs(path):
    graph = json.loads(path.read_text())
    assert any(n["class_type"] == "VExpressSaveVideo" for n in graph.values())
    for node in graph.values():
        widget = FILE_WIDGETS.get(node["class_type"])
        if widget:
            assert (WORKFLOWS / "input" / node["inputs"][widget]).is_file(), node["inputs"][widget]
    for item in (WORKFLOWS / "input").iterdir():
        assert item.stat().st_size < 400_000, f"{item.name} is too large to ship"


def test_the_manual_scenarios_are_all_there():
    graphs = {p.stem: json.loads(p.read_text()) for p in (WORKFLOWS / "api").glob("*.json")}

    def inputs(graph, class_type):
        return [n["inputs"] for n in graph.values() if n["class_type"] == class_type]

    strategies = {name: inputs(g, "VExpressRetargetKps")[0]["strategy"] for name, g in graphs.items()}
    assert strategies["V-Express 1 - Same person, driving video (no_retarget)"] == "no_retarget"
    assert strategies["V-Express 2 - Any speech, still head (fix_face)"] == "fix_face"
    assert strategies["V-Express 3 - Head motion of another person (offset_retarget)"] == "offset_retarget"
    weights = inputs(graphs["V-Express 4 - Stronger lip motion (attention 0.95, 3.0)"], "VExpressSampler")[0]
    assert (weights["reference_attention_weight"], weights["audio_attention_weight"]) == (0.95, 3.0)
    long_audio = graphs["V-Express 5 - Long speech on a small GPU (offload)"]
    assert inputs(long_audio, "LoadVExpressModels")[0]["offload"] == "offload"
    assert inputs(graphs["V-Express 1 - Same person, driving video (no_retarget)"], "VExpressExtractKps")
    other_person = graphs["V-Express 3 - Head motion of another person (offset_retarget)"]
    assert inputs(other_person, "VExpressLoadKps")[0]["kps_file"].endswith(".pth")
    full_frame = graphs["V-Express 6 - Whole photo, face off-centre (FaceCrop, paste-back in SaveVideo)"]
    assert inputs(full_frame, "LoadImage")[0]["image"] == "vexpress_landscape.jpg"
    # The streaming paste-back: SaveVideo gets the sampler's crops, the photo and FaceCrop's crop (no PasteBack).
    assert not inputs(full_frame, "VExpressPasteBack")
    crop_node = next(k for k, n in full_frame.items() if n["class_type"] == "VExpressFaceCrop")
    photo_node = next(k for k, n in full_frame.items() if n["class_type"] == "LoadImage")
    save = inputs(full_frame, "VExpressSaveVideo")[0]
    assert save["crop"] == [crop_node, 1] and save["full_image"] == [photo_node, 0]
    assert full_frame[save["images"][0]]["class_type"] == "VExpressSampler"
    assert inputs(full_frame, "VExpressRetargetKps")[0]["crop"] == [crop_node, 1]
    assert inputs(graphs["V-Express 7 - Faster (speed fast)"], "VExpressSampler")[0]["speed"] == "fast"
    assert all(inputs(g, "VExpressSampler")[0]["speed"] == "exact" for name, g in graphs.items() if "7 -" not in name)


# --------------------------------------------------------------------------------------- the API example


def test_api_example_uses_only_the_standard_library():
    tree = ast.parse((REPO / "scripts" / "api_example.py").read_text())
    modules = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert modules <= set(sys.stdlib_module_names) | {"__future__"}, modules


@pytest.fixture
def fake_comfyui(tmp_path):
    """A minimal stand-in for ComfyUI's HTTP API (upload, prompt, history, view, interrupt) in a thread."""
    import urllib.parse

    state = {"uploads": {}, "prompts": {}, "interrupts": 0}

    class Handler(ComfyApiHandler):
        def do_POST(self):
            body = self.read_body()
            if self.path == "/upload/image":
                name, content = self.uploaded_file(body)
                state["uploads"][name] = content
                return self.reply(200, {"name": name, "subfolder": "", "type": "input"})
            if self.path == "/prompt":
                graph = json.loads(body)["prompt"]
                if "bad" in json.dumps(graph):
                    return self.reply(400, {"error": {"message": "invalid"}, "node_errors": {"1": {}}})
                state["prompts"]["p1"] = graph
                return self.reply(200, {"prompt_id": "p1", "number": 0, "node_errors": {}})
            if self.path == "/interrupt":
                state["interrupts"] += 1
                return self.reply(200, {})
            return self.reply(404, {})

        def do_GET(self):
            if self.path.startswith("/history/"):
                entry = {"status": {"status_str": "success", "completed": True, "messages": []},
                         "outputs": {"8": {"images": [{"filename": "V_00001_.mp4", "subfolder": "vexpress",
                                                       "type": "output"}], "animated": [True]}}}
                return self.reply(200, {"p1": entry})
            if self.path.startswith("/view?"):
                query = urllib.parse.parse_qs(self.path.split("?", 1)[1])
                assert query["type"] == ["output"] and query["subfolder"] == ["vexpress"]
                return self.reply(200, b"mp4 bytes", raw=True)
            return self.reply(404, {})

    server, url = serve(Handler)
    yield url, state
    server.shutdown()


def test_api_example_uploads_queues_waits_and_downloads(fake_comfyui, tmp_path):
    url, state = fake_comfyui
    api = load_api_example()
    workflow = tmp_path / "wf.json"
    workflow.write_text((WORKFLOWS / "api" / "V-Express 2 - Any speech, still head (fix_face).json").read_text())
    speech = tmp_path / "speech.wav"
    speech.write_bytes(b"RIFF....WAVE")
    code = api.main([str(workflow), "--url", url, "--upload", str(speech), "--set", "2.audio=speech.wav",
                     "--set", "7.steps=3", "--out", str(tmp_path / "out")])
    assert code == 0
    assert state["uploads"] == {"speech.wav": b"RIFF....WAVE"}
    assert state["prompts"]["p1"]["2"]["inputs"]["audio"] == "speech.wav"
    assert state["prompts"]["p1"]["7"]["inputs"]["steps"] == 3
    assert (tmp_path / "out" / "vexpress" / "V_00001_.mp4").read_bytes() == b"mp4 bytes"


def test_api_example_reports_rejections_and_ui_format(fake_comfyui, tmp_path):
    url, _state = fake_comfyui
    api = load_api_example()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"1": {"class_type": "bad", "inputs": {}}}))
    assert api.main([str(bad), "--url", url, "--out", str(tmp_path)]) == 2
    assert api.main([str(WORKFLOWS / "V-Express 2 - Any speech, still head (fix_face).json"), "--url", url]) == 2
    assert api.main([str(bad), "--url", "http://127.0.0.1:9", "--out", str(tmp_path)]) == 5
