"""The pack in ComfyUI's own web frontend, as an artist uses it: a headless Chromium (Debian's ``chromium``) driven
by Playwright against a real server (``tests/comfy_server.py``) with a tiny random-weight model.

Each example workflow is opened from the Templates browser; a workflow is queued from the page at small settings
until its MP4 plays in SaveVideo's player; Cancel is pressed during a long run; a tooltip and a node's docs page are
looked at. A screenshot of every step goes to the folder printed at the start (``test-artifacts/browser/`` in the
repository, or ``$VEXPRESS_ARTIFACTS/browser``), so a failure in CI can be looked at.

Needs what ``bash scripts/test.sh`` sets up (``COMFYUI_PATH``, ``COMFYUI_PYTHON``, Playwright in the running
Python, ``/usr/bin/chromium``). Skipped with a how-to without a ComfyUI; in CI (``CI=true``) a missing browser is a
failure, not a skip.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from tests import comfy_server

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]
HOW_TO = (
    "put a ComfyUI checkout at ../shared/comfyui/ComfyUI beside the repository (or set COMFYUI_PATH) and run "
    "`bash scripts/test.sh` as root (it installs Debian's chromium and builds .venv-comfy with Playwright)"
)
if not os.environ.get("COMFYUI_PATH") or not os.environ.get("COMFYUI_PYTHON"):
    pytest.skip(f"no ComfyUI to test against: {HOW_TO}", allow_module_level=True)

REPO = comfy_server.REPO
PACK_FOLDER = comfy_server.PACK_FOLDER
CHROMIUM = os.environ.get("VEXPRESS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
VIEWPORT = {"width": 1600, "height": 1000}
WORKFLOWS = sorted((REPO / "example_workflows").glob("*.json"))
QUEUED = "V-Express 2 - Any speech, still head (fix_face)"
# Small settings typed into the page before queueing: the tiny model runs them in seconds on a CPU.
SMALL_WIDGETS = {
    "LoadVExpressModels": {"model": "tiny"},
    "VExpressAudioEmbed": {"fps": 6.0},
    "VExpressRetargetKps": {"width": 64, "height": 64},
    "VExpressSampler": {"width": 64, "height": 64, "steps": 2, "context_frames": 8, "context_overlap": 2},
}
PACK_WORDS = ("vexpress", "v-express")
NODES_2_SETTING = "Comfy.VueNodes.Enabled"
EXPERIMENTAL_VUE = "Enable Vue node rendering (hidden)"
# A dialog: PrimeVue's (frontend 1.2x) or any element with the dialog role (1.49's Templates browser).
DIALOG = ".p-dialog, [role='dialog']"
RENDERERS = ("classic", "nodes2")


def _require_browser():
    try:
        from playwright.sync_api import sync_playwright  # noqa: F401
    except ImportError:
        _missing("Playwright's Python package is not installed in this Python")
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        _missing(f"no Chromium at {CHROMIUM} (apt-get install chromium)")


def _missing(what: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"the browser test must run in CI: {what}")
    pytest.skip(f"{what}: {HOW_TO}")


@pytest.fixture(scope="module")
def shots() -> Path:
    root = Path(os.environ.get("VEXPRESS_ARTIFACTS", REPO / "test-artifacts")) / "browser"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    print(f"\nbrowser screenshots: {root}")
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir):
    _require_browser()
    # The examples name the model folder "V-Express" (what the loader downloads); a user who has it sees that value
    # among the options. The tiny model stands in under that name too.
    base = tmp_path_factory.mktemp("comfyui_browser")
    with comfy_server.running_server(base, tiny_model_dir, HOW_TO, model_names=("tiny", "V-Express")) as running:
        yield running


class Frontend:
    """The ComfyUI page: Playwright's page plus the console messages it logged."""

    def __init__(self, page, shots: Path, renderer: str) -> None:
        self.page, self.shots, self.renderer, self.console = page, shots, renderer, []
        page.on("console", lambda message: self.console.append((message.type, message.text)))
        page.on("pageerror", lambda error: self.console.append(("error", str(error))))

    def shot(self, name: str) -> Path:
        path = self.shots / f"{len(list(self.shots.iterdir())):02d}_{name}.png"
        self.page.screenshot(path=str(path))
        return path

    def js(self, script: str, arg=None):
        return self.page.evaluate(script, arg)

    def pack_errors(self) -> list[str]:
        return [text for kind, text in self.console if kind == "error" and any(w in text.lower() for w in PACK_WORDS)]

    def close_dialogs(self) -> None:
        for _ in range(3):
            if self.page.locator(DIALOG).filter(visible=True).count() == 0:
                return
            self.page.keyboard.press("Escape")
            self.page.wait_for_timeout(300)


def _has_nodes_2() -> bool:
    """Whether this ComfyUI's frontend package (in the running Python, as in the server's) offers Nodes 2.0: 1.49
    (ComfyUI 0.33) does; 1.27 (0.3.64) has only a hidden experimental toggle of an early Vue renderer (its setting
    is named "Enable Vue node rendering (hidden)"), which lays nodes out over each other."""
    try:
        import comfyui_frontend_package
    except ImportError:
        return False
    assets = [path.read_text(errors="ignore") for path in
              (Path(comfyui_frontend_package.__file__).parent / "static" / "assets").glob("*.js")]
    return any(NODES_2_SETTING in text for text in assets) and not any(EXPERIMENTAL_VUE in text for text in assets)


@pytest.fixture(scope="module")
def frontend(request, server, shots, tmp_path_factory):
    """The page with the classic (LiteGraph canvas) renderer, or with Nodes 2.0 (``request.param == "nodes2"``, the
    Vue renderer, where the frontend has it)."""
    from playwright.sync_api import sync_playwright

    renderer = getattr(request, "param", "classic")
    if renderer == "nodes2" and not _has_nodes_2():
        pytest.skip(f"this ComfyUI's frontend has no Nodes 2.0 ({NODES_2_SETTING}), only the classic renderer")
    if _has_nodes_2():  # a user setting kept by the server: say which renderer this page opens with
        comfy_server.api.post_json(server.url, f"/settings/{NODES_2_SETTING}", renderer == "nodes2")
    shots = shots / renderer
    shots.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium_profile")), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_FLAGS, viewport=VIEWPORT,
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            ui = Frontend(page, shots, renderer)
            page.goto(server.url, wait_until="domcontentloaded")
            page.wait_for_function("() => window.app && window.app.graph && window.LiteGraph", timeout=120_000)
            page.wait_for_timeout(2000)
            ui.shot("opened")
            ui.close_dialogs()
            yield ui
        finally:
            context.close()


# ---------------------------------------------------------------------------------------------- templates


GRAPH_STATE = """() => {
    const graph = window.app.graph;
    const known = (type) => !!window.LiteGraph.registered_node_types[type];
    return graph.nodes.map((node) => ({
        id: node.id, type: node.type, known: known(node.type), error: !!node.has_errors,
        pos: [node.pos[0], node.pos[1]], size: [node.size[0], node.size[1]],
        combos: (node.widgets || []).filter((w) => w.type === "combo").map((w) => ({
            name: w.name, value: w.value,
            options: Array.isArray(w.options.values) ? w.options.values
                : (typeof w.options.values === "function" ? w.options.values() : []),
        })),
    }));
}"""


ON_SCREEN = """() => {
    const canvas = window.app.canvas, frame = canvas.canvas.getBoundingClientRect();
    const screen = (x, y) => {
        const p = canvas.ds.convertOffsetToCanvas([x, y]);
        return [frame.left + p[0], frame.top + p[1]];
    };
    const nodes = window.app.graph.nodes.map((n) => {
        const [l, t] = screen(n.pos[0], n.pos[1] - window.LiteGraph.NODE_TITLE_HEIGHT);
        const [r, b] = screen(n.pos[0] + n.size[0], n.pos[1] + n.size[1]);
        return {name: n.type, l, t, r, b};
    });
    const selector = ".side-tool-bar-container, .comfyui-body-top, .actionbar, .minimap-main-container";
    const covers = [...document.querySelectorAll(selector)].map((e) => {
        const r = e.getBoundingClientRect();
        return {name: e.className, l: r.left, t: r.top, r: r.right, b: r.bottom};
    }).filter((c) => c.r > c.l && c.b > c.t);
    return {nodes, covers, width: window.innerWidth, height: window.innerHeight};
}"""


# Nodes 2.0 draws each node as a DOM element ([data-node-id]) over the canvas: where they are on the page.
VUE_NODES = """() => [...document.querySelectorAll('[data-node-id]')].map((e) => {
    const r = e.getBoundingClientRect();
    return {name: e.getAttribute('data-node-id'), l: r.left, t: r.top, r: r.right, b: r.bottom};
}).filter((n) => n.r > n.l && n.b > n.t)"""


def _apart(a: dict, b: dict) -> bool:
    return a["r"] <= b["l"] or b["r"] <= a["l"] or a["b"] <= b["t"] or b["b"] <= a["t"]


def _open_template(ui: Frontend, title: str) -> None:
    page = ui.page
    ui.close_dialogs()  # the command toggles the Templates browser: an open one (1.49 shows it at start) would close
    ui.js("() => window.app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    dialog = page.locator(DIALOG).filter(visible=True).last
    dialog.wait_for(state="visible", timeout=30_000)
    dialog.get_by_text(PACK_FOLDER, exact=True).first.click()
    card = dialog.get_by_text(title, exact=True).first
    card.wait_for(state="visible", timeout=30_000)
    ui.shot(f"templates_{title[:11].replace(' ', '_')}")
    card.click()
    page.wait_for_function(
        "(n) => window.app.graph.nodes.length === n", arg=len(json.loads((REPO / "example_workflows" /
                                                                          f"{title}.json").read_text())["nodes"]),
        timeout=30_000,
    )
    page.wait_for_timeout(1500)


@pytest.mark.parametrize("frontend", RENDERERS, indirect=True)
@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_template_opens_without_missing_nodes_or_errors(frontend, path):
    ui = frontend
    before = len(ui.pack_errors())
    _open_template(ui, path.stem)
    shot = ui.shot(f"open_{path.stem[:11].replace(' ', '_')}")
    missing_dialog = ui.page.locator(DIALOG).filter(visible=True).filter(has_text=re.compile("missing|not found", re.I))
    assert missing_dialog.count() == 0, f"missing-node dialog, see {shot}"
    nodes = ui.js(GRAPH_STATE)
    assert all(n["known"] for n in nodes), [n["type"] for n in nodes if not n["known"]]
    assert not [n["type"] for n in nodes if n["error"]], f"nodes in error, see {shot}"
    for node in nodes:
        for combo in node["combos"]:
            assert combo["value"] in combo["options"], f"{node['type']}.{combo['name']}={combo['value']!r}"
    assert ui.pack_errors()[before:] == [], f"console errors from the pack, see {shot}"
    # The whole graph is in view when it opens: inside the window, under no menu, side bar or minimap.
    view = ui.js(ON_SCREEN)
    if ui.renderer == "nodes2":  # the nodes as drawn, which Nodes 2.0 sizes to its own widgets
        view["nodes"] = ui.js(VUE_NODES)
        assert len(view["nodes"]) == len(nodes), view["nodes"]
    assert len(view["covers"]) >= 3, view["covers"]  # the side bar, the top menu and the minimap at least
    for index, node in enumerate(view["nodes"]):
        inside = node["l"] >= 0 and node["t"] >= 0 and node["r"] <= view["width"] and node["b"] <= view["height"]
        assert inside, f"{node['name']} is cut off at the window's edge, see {shot}"
        for cover in view["covers"]:
            assert _apart(node, cover), f"{node['name']} lies under {cover['name']!r}, see {shot}"
        for other in view["nodes"][index + 1:]:
            assert _apart(node, other), f"{node['name']} overlaps {other['name']}, see {shot}"


# ------------------------------------------------------------------------------------------------ queueing


SET_WIDGETS = """(settings) => {
    for (const node of window.app.graph.nodes) {
        for (const [name, value] of Object.entries(settings[node.type] || {})) {
            const widget = (node.widgets || []).find((w) => w.name === name);
            if (!widget) throw new Error(`${node.type} has no widget ${name}`);
            widget.value = value;
            if (widget.callback) widget.callback(value);
        }
    }
    window.app.graph.setDirtyCanvas(true, true);
}"""


def _queue_from_page(ui: Frontend) -> None:
    """Press the frontend's Run button."""
    ui.page.locator(".actionbar button").filter(has_text="Run").first.click()


def _history(server) -> dict:
    return comfy_server.api.get_json(server.url, "/history")


@pytest.mark.parametrize("frontend", RENDERERS, indirect=True)
def test_queue_from_the_page_plays_the_mp4_in_savevideo(frontend, server):
    ui = frontend
    _open_template(ui, QUEUED)
    ui.js(SET_WIDGETS, SMALL_WIDGETS)
    ui.shot("small_settings")
    started = time.monotonic()
    _queue_from_page(ui)
    video = ui.page.locator("video[src*='type=output']").first
    video.wait_for(state="attached", timeout=300_000)
    ui.page.wait_for_function(
        "() => { const v = document.querySelector(\"video[src*='type=output']\"); return v && v.readyState >= 1; }",
        timeout=60_000,
    )
    ui.page.wait_for_timeout(1000)
    shot = ui.shot("video_in_savevideo")
    src = video.get_attribute("src")
    assert "type=output" in src and "vexpress" in src, src
    duration = ui.js("() => document.querySelector(\"video[src*='type=output']\").duration")
    assert duration > 1.0, f"the video lasts {duration} s, see {shot}"
    print(f"queued from the page: MP4 playing after {time.monotonic() - started:.1f} s")
    assert ui.pack_errors() == []


WATCH_PROGRESS = """() => {
    window.vexpressTestProgress = [];
    if (!window.vexpressTestWatching) {
        window.vexpressTestWatching = true;
        window.app.api.addEventListener("progress", (event) => {
            window.vexpressTestProgress.push([String(event.detail.node), event.detail.value, event.detail.max]);
        });
    }
}"""


def _sampler_progress(ui: Frontend, sampler_id: str) -> list[int]:
    """The sampler's progress values the page has received (one per UNet call)."""
    return [value for node, value, _ in ui.js("() => window.vexpressTestProgress") if node == sampler_id]


def test_cancel_during_a_long_run_interrupts_within_one_unet_call(frontend, server):
    """Cancel pressed while the sampler runs: the run ends as interrupted, in the sampler, after at most the one
    UNet call that was under way (the progress bar counts UNet calls)."""
    ui = frontend
    _open_template(ui, QUEUED)
    ui.js(SET_WIDGETS, {**SMALL_WIDGETS, "VExpressSampler": {**SMALL_WIDGETS["VExpressSampler"], "steps": 500,
                                                              "seed": 4242}})
    sampler_id = str(ui.js("() => window.app.graph.nodes.find((n) => n.type === 'VExpressSampler').id"))
    ui.js(WATCH_PROGRESS)
    before = set(_history(server))
    _queue_from_page(ui)
    ui.page.wait_for_function(
        "(id) => window.vexpressTestProgress.filter((p) => p[0] === id).length >= 3", arg=sampler_id, timeout=300_000
    )
    ui.shot("long_run")
    cancel = ui.page.get_by_role("button", name="Cancel current run")
    cancel.click()  # the action bar's Cancel (x) button, enabled while a prompt runs
    at_press = max(_sampler_progress(ui, sampler_id))
    entry = None
    deadline = time.monotonic() + 300
    while entry is None and time.monotonic() < deadline:
        new = {k: v for k, v in _history(server).items() if k not in before}
        entry = next(iter(new.values()), None)
        time.sleep(0.2)
    ui.shot("cancelled")
    assert entry is not None, "the run did not end after Cancel"
    events = [event for event, _ in entry["status"]["messages"]]
    assert "execution_interrupted" in events, events
    interrupted = next(data for event, data in entry["status"]["messages"] if event == "execution_interrupted")
    assert interrupted["node_type"] == "VExpressSampler"
    progress = _sampler_progress(ui, sampler_id)
    assert max(progress) - at_press <= 1, f"{max(progress) - at_press} UNet calls ran after Cancel"
    assert max(progress) < 500  # 500 steps are at least 500 UNet calls: the run was stopped, not finished
    print(f"Cancel pressed at UNet call {at_press}, run ended after call {max(progress)}")


# ------------------------------------------------------------------------------------------ tooltip, docs


# Where on the screen a node's widget row is (the first column of the row), or, with no widget, the middle of
# the node's title bar: the graph's canvas coordinates through the canvas transform and the page offset.
NODE_SCREEN_POINT = """([type, widgetName]) => {
    const app = window.app, canvas = app.canvas;
    const node = app.graph.nodes.find((n) => n.type === type);
    let offset = [node.size[0] / 2, -15];
    if (widgetName !== null) {
        const widget = node.widgets.find((w) => w.name === widgetName);
        offset = [40, (widget.last_y ?? widget.y) + 10];
    }
    const point = canvas.ds.convertOffsetToCanvas([node.pos[0] + offset[0], node.pos[1] + offset[1]]);
    const rect = canvas.canvas.getBoundingClientRect();
    return [rect.left + point[0], rect.top + point[1]];
}"""


def test_tooltip_shows_on_hover(frontend):
    ui = frontend
    _open_template(ui, QUEUED)
    x, y = ui.js(NODE_SCREEN_POINT, ["VExpressSampler", "steps"])
    ui.page.mouse.move(x - 5, y)
    ui.page.mouse.move(x, y)
    tooltip = ui.page.locator(".node-tooltip")
    tooltip.wait_for(state="visible", timeout=10_000)
    ui.shot("tooltip")
    assert "steps" in tooltip.inner_text().lower() or "denois" in tooltip.inner_text().lower()


def test_node_docs_page_opens(frontend):
    ui = frontend
    _open_template(ui, QUEUED)
    x, y = ui.js(NODE_SCREEN_POINT, ["VExpressSampler", None])
    ui.page.mouse.click(x, y)  # select the node: the selection toolbox appears above it
    ui.page.wait_for_timeout(500)
    ui.shot("selected")
    help_button = ui.page.locator("[data-testid='info-button']").first
    help_button.wait_for(state="visible", timeout=10_000)
    help_button.click()
    page_text = ui.page.get_by_text("V-Express Sampler").first
    page_text.wait_for(state="visible", timeout=15_000)
    ui.page.wait_for_timeout(1000)
    ui.shot("docs_page")
    doc = (REPO / "web" / "docs" / "VExpressSampler.md").read_text().splitlines()
    sentence = next(line for line in doc[1:] if line.strip() and not line.startswith("#"))[:40]
    assert ui.page.get_by_text(sentence[:30], exact=False).count() > 0
