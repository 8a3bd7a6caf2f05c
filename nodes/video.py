"""``VExpressSaveVideo``: IMAGE frames + AUDIO + fps -> an H.264 + AAC MP4 in ComfyUI's output folder; with a
photo and FaceCrop's crop it pastes the face frames back into the photo chunk by chunk as it writes (the
library's ``paste_back_chunks``), so full frames never pile up in memory.

Cancel (POST /interrupt) is honoured between chunks: the writer then discards its hidden partial file, so a
cancelled prompt leaves nothing in ``output/``. A server killed while encoding leaves its hidden partial file
behind; the next save under the same prefix removes such leftovers (:func:`remove_stale_partials`).
"""

from __future__ import annotations

import glob
import json
import logging
import os
from pathlib import Path

from ..vexpress_model.errors import InputError
from . import _comfy, _types, _widgets
from ._comfy import io, ui
from ._texts import NodeTexts
from .full_frame import PASTE_CHUNK_FRAMES, make_paster

CATEGORY = "V-Express/video"
ENCODE_CHUNK_FRAMES = 32

logger = logging.getLogger("vexpress.nodes.video")


def remove_stale_partials(folder: str | os.PathLike, filename: str) -> list[Path]:
    """Remove the hidden partial files (``files.partial_path``) of saves named ``<filename>_...`` in ``folder``
    that were last written before this process started: a server runs one prompt at a time, so such a file
    belongs to a server that was killed while encoding (a live writer keeps its file's time current). Returns
    the removed paths."""
    import psutil  # one of ComfyUI's own requirements

    started = psutil.Process().create_time()
    removed = []
    for path in Path(folder).glob(f".{glob.escape(filename)}_*.partial*"):
        try:
            if path.is_file() and path.stat().st_mtime < started:
                path.unlink()
                removed.append(path)
        except OSError as exc:  # gone already, or a folder that refuses it: the save itself goes on
            logger.debug("could not remove %s: %s", path, exc)
    if removed:
        logger.info("V-Express: removed %d partial file(s) left by an interrupted server: %s", len(removed),
                    ", ".join(p.name for p in removed))
    return removed


class VExpressSaveVideo(io.ComfyNode):
    """Frames + AUDIO + fps -> an H.264/AAC MP4 (optionally pasted back into the photo as it is written)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        inputs = [
            io.Image.Input("images"),
            io.Audio.Input("audio", optional=True),
            _widgets.fps("fps"),
            io.String.Input("filename_prefix", default="vexpress/VExpress"),
            io.Int.Input("crf", default=17, min=0, max=51),
            # Full-frame portraits: pasted back into the photo chunk by chunk while written.
            io.Image.Input("full_image", optional=True),
            _types.CropType.Input("crop", optional=True),
            _widgets.feather(optional=True),
            _widgets.color_match(optional=True),
            _widgets.max_side(optional=True),
        ]
        outputs = [io.Video.Output("video")]
        return NodeTexts("VExpressSaveVideo", CATEGORY).schema(inputs, outputs, is_output_node=True)

    @classmethod
    def execute(cls, images, fps: float, filename_prefix: str, crf: int, audio=None, full_image=None, crop=None,
                feather: float | None = None, color_match: str | None = None, max_side: int | None = None,
                ) -> io.NodeOutput:
        from ..vexpress_model.inputs.audio import audio_from_comfy
        from ..vexpress_model.outputs.paste_back import DEFAULT_COLOR_MATCH, DEFAULT_FEATHER, paste_back_chunks
        from ..vexpress_model.outputs.video import write_video

        if (full_image is None) != (crop is None):
            raise InputError("SaveVideo pastes the face back only with both full_image and crop connected; "
                             "connect the photo and FaceCrop's crop, or neither")
        paster = None
        if crop is not None:
            paster = make_paster(full_image, crop, DEFAULT_FEATHER if feather is None else feather,
                                 color_match or DEFAULT_COLOR_MATCH, max_side or 0)
        folder_paths = _comfy.folder_paths
        width, height = paster.size if paster else (int(images.shape[2]), int(images.shape[1]))
        full_folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, folder_paths.get_output_directory(), width, height
        )
        file = f"{filename}_{counter:05}_.mp4"
        path = os.path.join(full_folder, file)
        remove_stale_partials(full_folder, filename)

        sound = None
        if audio is not None:
            decoded = audio_from_comfy(_types.first_audio_item(audio), name="the AUDIO input")
            sound = (decoded.waveform, decoded.sample_rate)

        def frames():
            for start in range(0, images.shape[0], ENCODE_CHUNK_FRAMES):
                yield _types.image_to_uint8(images[start : start + ENCODE_CHUNK_FRAMES])

        # Pasted chunk by chunk as the writer asks for frames: one chunk of full frames in memory at a time.
        chunks = frames() if paster is None else paste_back_chunks(frames(), paster, PASTE_CHUNK_FRAMES)
        write_video(path, _cancellable(chunks), fps=float(fps), audio=sound, crf=int(crf), metadata=cls._metadata())
        video = _comfy.InputImpl.VideoFromFile(path)
        return io.NodeOutput(video, ui=ui.PreviewVideo([ui.SavedResult(file, subfolder, io.FolderType.output)]))

    @classmethod
    def _metadata(cls) -> dict[str, str]:
        """The prompt and workflow, as core SaveVideo embeds them (unless --disable-metadata): each
        ``extra_pnginfo`` key (the UI sends ``workflow``), then ``prompt``, as JSON text."""
        if _comfy.cli_args().disable_metadata or cls.hidden is None:
            return {}
        metadata: dict[str, str] = {}
        if cls.hidden.extra_pnginfo is not None:
            for key, value in cls.hidden.extra_pnginfo.items():
                metadata[key] = json.dumps(value)
        if cls.hidden.prompt is not None:
            metadata["prompt"] = json.dumps(cls.hidden.prompt)
        return metadata


def _cancellable(chunks):
    """``chunks``, checking for Cancel before each one: the writer aborts (and deletes its partial file) on it."""
    from .progress import cancel_check

    check = cancel_check()
    for chunk in chunks:
        check()
        yield chunk


NODES = [VExpressSaveVideo]
