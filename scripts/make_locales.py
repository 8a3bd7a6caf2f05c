"""Write ``locales/en/nodeDefs.json`` from the node definitions of a running ComfyUI with this pack installed.

The English texts live in the node schemas (``nodes/*.py``); this copies them into the locale file the frontend
reads (``{NodeId: {display_name, description, inputs: {id: {name, tooltip}}, outputs: {"0": {name, tooltip}}}}``)
so that translators see every string. ``locales/de`` and ``locales/zh`` are translated by hand from it; the tests
check that every locale has exactly the English keys, and (with ComfyUI) that English equals the schemas::

    python scripts/make_locales.py --url http://127.0.0.1:8188
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACK_PREFIXES = ("VExpress", "LoadVExpressModels")


def node_defs(object_info: dict) -> dict:
    result = {}
    for node_id in sorted(object_info):
        info = object_info[node_id]
        if not node_id.startswith(PACK_PREFIXES) or not info.get("python_module", "").startswith("custom_nodes"):
            continue
        inputs = {}
        for group in ("required", "optional"):
            for name in info.get("input_order", {}).get(group, []):
                options = info["input"][group][name][1] if len(info["input"][group][name]) > 1 else {}
                inputs[name] = {"name": options.get("display_name", name), "tooltip": options.get("tooltip", "")}
        outputs = {
            str(index): {"name": name, "tooltip": tooltip or ""}
            for index, (name, tooltip) in enumerate(zip(info["output_name"], info.get("output_tooltips", [])))
        }
        result[node_id] = {
            "display_name": info["display_name"],
            "description": info["description"],
            "inputs": inputs,
            "outputs": outputs,
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8188")
    args = parser.parse_args(argv)
    with urllib.request.urlopen(args.url.rstrip("/") + "/object_info", timeout=60) as response:
        defs = node_defs(json.loads(response.read()))
    if not defs:
        print("no V-Express nodes in /object_info: is the pack installed?", file=sys.stderr)
        return 1
    target = REPO / "locales" / "en" / "nodeDefs.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(defs, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {target} ({len(defs)} nodes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
