"""Widgets that several nodes share: name, range, default and options defined once (the rarely changed ones --
context windows, compat -- marked advanced where ComfyUI has that). Their tooltips, like every
text of the pack, are in ``locales/en/nodeDefs.json`` (each node says there what the value means for it)."""

from __future__ import annotations

from ..vexpress_model.options import (
    COLOR_MATCH_MODES,
    COMPAT_MODES,
    FACE_DETECTORS,
    MAX_FPS,
    MEDIAN_FILTER_MODES,
    MIN_FPS,
    SCHEDULERS,
    SPEED_PRESETS,
)
from ..vexpress_model.pipeline.windows import MAX_CONTEXT_FRAMES
from ._comfy import io, marked_advanced


def width() -> io.Int.Input:
    return io.Int.Input("width", default=512, min=64, max=2048, step=8)


def height() -> io.Int.Input:
    return io.Int.Input("height", default=512, min=64, max=2048, step=8)


def fps(name: str) -> io.Float.Input:
    """A frame-rate widget: every fps input of the pack has the library's range (``MIN_FPS`` to ``MAX_FPS``)."""
    return io.Float.Input(name, default=30.0, min=MIN_FPS, max=MAX_FPS, step=0.01)


def compat(*, optional: bool = False) -> io.Combo.Input:
    return marked_advanced(io.Combo.Input("compat", options=list(COMPAT_MODES), default="fixed", optional=optional))


def median_filter() -> io.Combo.Input:
    return io.Combo.Input("median_filter", options=list(MEDIAN_FILTER_MODES), default="auto")


def context_frames() -> io.Int.Input:
    return marked_advanced(io.Int.Input("context_frames", default=24, min=1, max=MAX_CONTEXT_FRAMES))


def context_overlap() -> io.Int.Input:
    return marked_advanced(io.Int.Input("context_overlap", default=4, min=0, max=MAX_CONTEXT_FRAMES - 1))


def face_detector(*, optional: bool = False) -> io.Combo.Input:
    return io.Combo.Input("face_detector", options=list(FACE_DETECTORS), default="auto", optional=optional)


# The paste-back settings of PasteBack and of SaveVideo's streaming paste-back (the library's ranges and defaults).
def feather(*, optional: bool = False) -> io.Float.Input:
    from ..vexpress_model.outputs.paste_back import DEFAULT_FEATHER, MAX_FEATHER

    return io.Float.Input("feather", default=DEFAULT_FEATHER, min=0.0, max=MAX_FEATHER, step=0.01, optional=optional)


def color_match(*, optional: bool = False) -> io.Combo.Input:
    from ..vexpress_model.outputs.paste_back import DEFAULT_COLOR_MATCH

    return io.Combo.Input("color_match", options=list(COLOR_MATCH_MODES), default=DEFAULT_COLOR_MATCH,
                          optional=optional)


def max_side(*, optional: bool = False) -> io.Int.Input:
    return io.Int.Input("max_side", default=0, min=0, max=8192, optional=optional)


# The sampler's fast modes (docs/speed.md): optional, so that workflows and API prompts saved without them run the
# exact path as before. "preset" / 0: the speed preset's value.
PRESET_SCHEDULER = "preset"


def speed() -> io.Combo.Input:
    return io.Combo.Input("speed", options=list(SPEED_PRESETS), default="exact", optional=True)


def scheduler() -> io.Combo.Input:
    return io.Combo.Input("scheduler", options=[PRESET_SCHEDULER, *SCHEDULERS], default=PRESET_SCHEDULER,
                          optional=True)


def cache_interval() -> io.Int.Input:
    return io.Int.Input("cache_interval", default=0, min=0, max=10, optional=True)


def cfg_end() -> io.Float.Input:
    return io.Float.Input("cfg_end", default=0.0, min=0.0, max=1.0, step=0.05, optional=True)
