"""Widgets that several nodes share: name, range, default and options defined once (each node says in its own
tooltip what the value means there)."""

from __future__ import annotations

from ..vexpress_model.options import COLOR_MATCH_MODES, COMPAT_MODES, FACE_DETECTORS, MAX_FPS, MEDIAN_FILTER_MODES
from ..vexpress_model.pipeline.timing import MAX_CONTEXT_FRAMES
from ._comfy import io


def width(*, tooltip: str) -> io.Int.Input:
    return io.Int.Input("width", default=512, min=64, max=2048, step=8, tooltip=tooltip)


def height(*, tooltip: str) -> io.Int.Input:
    return io.Int.Input("height", default=512, min=64, max=2048, step=8, tooltip=tooltip)


def fps(name: str, *, tooltip: str) -> io.Float.Input:
    """A frame-rate widget: every fps input of the pack has the library's range (up to ``MAX_FPS``)."""
    return io.Float.Input(name, default=30.0, min=1.0, max=MAX_FPS, step=0.01, tooltip=tooltip)


def compat(*, tooltip: str) -> io.Combo.Input:
    return io.Combo.Input("compat", options=list(COMPAT_MODES), default="fixed", tooltip=tooltip)


def median_filter(*, tooltip: str) -> io.Combo.Input:
    return io.Combo.Input("median_filter", options=list(MEDIAN_FILTER_MODES), default="auto", tooltip=tooltip)


def context_frames(*, tooltip: str) -> io.Int.Input:
    return io.Int.Input("context_frames", default=24, min=1, max=MAX_CONTEXT_FRAMES, tooltip=tooltip)


def context_overlap(*, tooltip: str) -> io.Int.Input:
    return io.Int.Input("context_overlap", default=4, min=0, max=MAX_CONTEXT_FRAMES - 1, tooltip=tooltip)


def face_detector(*, tooltip: str, optional: bool = False) -> io.Combo.Input:
    return io.Combo.Input("face_detector", options=list(FACE_DETECTORS), default="auto", tooltip=tooltip,
                          optional=optional)


# The paste-back settings of PasteBack and of SaveVideo's streaming paste-back (the library's ranges and defaults).
FEATHER_TOOLTIP = "Width of the soft edge as a fraction of the crop side; 0 is a hard edge."
COLOR_MATCH_TOOLTIP = (
    "Match the generated face's colours to the photo: clip (one correction for the whole clip, no flicker), "
    "frame (each frame on its own), or off."
)
MAX_SIDE_TOOLTIP = "Scale the result down so its longer side is at most this many pixels (0: the photo's size)."


def feather(*, tooltip: str, optional: bool = False) -> io.Float.Input:
    from ..vexpress_model.outputs.paste_back import DEFAULT_FEATHER, MAX_FEATHER

    return io.Float.Input("feather", default=DEFAULT_FEATHER, min=0.0, max=MAX_FEATHER, step=0.01, tooltip=tooltip,
                          optional=optional)


def color_match(*, tooltip: str, optional: bool = False) -> io.Combo.Input:
    from ..vexpress_model.outputs.paste_back import DEFAULT_COLOR_MATCH

    return io.Combo.Input("color_match", options=list(COLOR_MATCH_MODES), default=DEFAULT_COLOR_MATCH,
                          tooltip=tooltip, optional=optional)


def max_side(*, tooltip: str, optional: bool = False) -> io.Int.Input:
    return io.Int.Input("max_side", default=0, min=0, max=8192, tooltip=tooltip, optional=optional)
