"""The pack's English texts, written once: ``locales/en/nodeDefs.json``.

The frontend reads that file for the English display names, descriptions and tooltips (``de`` and ``zh`` beside it
are its translations), and the schemas take theirs from it too, so ``/object_info`` (what API users and older
frontends see) says exactly what the graph editor shows, and a text is edited in one place. A node's schema names
its inputs and outputs and their ranges; ``NodeTexts(node_id, category).schema(inputs, outputs)`` fills in the
words.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import _comfy
from ._comfy import io

LOCALE_FILE = Path(__file__).resolve().parents[1] / "locales" / "en" / "nodeDefs.json"
# Extra words the node library's search finds every node of the pack by, where ComfyUI has them (after 0.3.64).
SEARCH_ALIASES = ("talking head", "lip sync", "avatar", "portrait animation", "V-Express")


class NodeTexts:
    """The English texts of one node (under its category in the node library), read from :data:`LOCALE_FILE` when
    its schema is built."""

    def __init__(self, node_id: str, category: str) -> None:
        entries = json.loads(LOCALE_FILE.read_text(encoding="utf-8"))
        if node_id not in entries:
            raise KeyError(f"{LOCALE_FILE} has no entry for node {node_id!r}: add its texts there")
        self.node_id = node_id
        self.category = category
        self._entry: dict[str, Any] = entries[node_id]

    def _text(self, group: str, key: str) -> dict[str, str]:
        try:
            return self._entry[group][key]
        except KeyError:
            raise KeyError(f"{LOCALE_FILE}: {self.node_id} has no {group[:-1]} {key!r}: add its text there") from None

    def schema(self, inputs: list[Any], outputs: list[Any], **options: Any) -> io.Schema:
        """``io.Schema`` of this node with its display name and description, each input's tooltip and each
        output's display name and tooltip (outputs by position, as the frontend's locale keys them), and the pack's
        search aliases where this ComfyUI's schema has them."""
        for item in inputs:
            item.tooltip = self._text("inputs", item.id)["tooltip"]
        for index, item in enumerate(outputs):
            text = self._text("outputs", str(index))
            item.display_name, item.tooltip = text["name"], text["tooltip"]
        if _comfy.schema_has("search_aliases"):
            options.setdefault("search_aliases", list(SEARCH_ALIASES))
        return io.Schema(
            node_id=self.node_id,
            display_name=self._entry["display_name"],
            category=self.category,
            description=self._entry["description"],
            inputs=inputs,
            outputs=outputs,
            **options,
        )
