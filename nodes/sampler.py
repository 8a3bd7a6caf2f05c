"""``VExpressSampler``: reference image + kps track + audio embeddings -> video frames (IMAGE) and their fps."""

from __future__ import annotations

from . import _types, _widgets
from ._comfy import io, marked_advanced
from ._texts import NodeTexts

CATEGORY = "V-Express/sampling"


class VExpressSampler(io.ComfyNode):
    """Reference image + kps track + audio features -> the video frames (IMAGE) and their fps."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        inputs = [
            _types.PipeType.Input("pipe"),
            io.Image.Input("reference_image"),
            _types.KpsType.Input("kps"),
            _types.AudioEmbedsType.Input("audio_embeds"),
            _widgets.width(),
            _widgets.height(),
            io.Int.Input("steps", default=25, min=1, max=200),
            io.Float.Input("guidance_scale", default=3.5, min=1.0, max=20.0, step=0.05),
            io.Int.Input("seed", default=42, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True),
            marked_advanced(io.Float.Input("reference_attention_weight", default=1.0, min=0.0, max=3.0, step=0.01)),
            marked_advanced(io.Float.Input("audio_attention_weight", default=1.0, min=0.0, max=10.0, step=0.01)),
            _widgets.context_frames(),
            _widgets.context_overlap(),
            _widgets.compat(),
            _widgets.median_filter(),
            _widgets.speed(),
            _widgets.scheduler(),
            _widgets.cache_interval(),
            _widgets.cfg_end(),
        ]
        outputs = [io.Image.Output("images"), io.Float.Output("fps")]
        return NodeTexts("VExpressSampler", CATEGORY).schema(inputs, outputs)

    @classmethod
    def validate_inputs(cls, context_frames: int = 24, context_overlap: int = 4, width: int = 512, height: int = 512,
                        **kwargs):
        if context_overlap >= context_frames:
            return f"context_overlap ({context_overlap}) must be smaller than context_frames ({context_frames})"
        if width % 8 or height % 8:
            return f"width and height must be multiples of 8, got {width}x{height}"
        return True

    @classmethod
    def execute(cls, pipe, reference_image, kps, audio_embeds, width: int, height: int, steps: int,
                guidance_scale: float, seed: int, reference_attention_weight: float, audio_attention_weight: float,
                context_frames: int, context_overlap: int, compat: str, median_filter: str = "auto",
                speed: str = "exact", scheduler: str = _widgets.PRESET_SCHEDULER, cache_interval: int = 0,
                cfg_end: float = 0.0) -> io.NodeOutput:
        import torch

        from ..vexpress_model.conditioning.audio_features import Wav2Vec2Features
        from ..vexpress_model.conditioning.kps_images import kps_image_source
        from ..vexpress_model.conditioning.kps_sequence import kps_for_frames
        from ..vexpress_model.inputs.image import load_reference_image
        from ..vexpress_model.options import check_scheduler_compat
        from ..vexpress_model.outputs.median_filter import median_filter_enabled, median_filtered_chunks
        from ..vexpress_model.pipeline.hooks import Hooks, SamplingSettings
        from ..vexpress_model.pipeline.speed_presets import speed_values
        from ..vexpress_model.pipeline.windows import FramePlan, context_windows
        from .memory_management import make_pipeline
        from .progress import cancel_check, progress_reporter, stage_progress

        num_frames = audio_embeds.num_frames
        fps = audio_embeds.fps
        # AudioEmbed counted the frames the "fixed" way, so the windows are laid out that way too.
        plan = FramePlan(num_frames, fps, context_windows(num_frames, context_frames, context_overlap, "fixed"))

        reference = load_reference_image(_types.image_to_uint8(reference_image)[0], width, height, compat=compat)
        # The kps track is already retargeted (RetargetKps); one made for these frames is used frame for frame.
        points = kps_for_frames(None, kps, "no_retarget", num_frames, fps, width, height, compat,
                                keep_matching_length=True).points
        kps_images = kps_image_source(points, width, height)

        pipeline = make_pipeline(pipe, compat)
        # The steps widget counts for exact; balanced and fast bring their own step count. Unset advanced inputs
        # ("preset", 0) take the preset's value.
        fast_modes = speed_values(
            speed, num_inference_steps=steps if speed == "exact" else None,
            scheduler=None if scheduler == _widgets.PRESET_SCHEDULER else scheduler,
            cache_interval=cache_interval or None, cfg_end=cfg_end or None)
        check_scheduler_compat(fast_modes["scheduler"], compat, f"scheduler {fast_modes['scheduler']!r}")
        settings = SamplingSettings.from_values(fast_modes.pop("num_inference_steps"), guidance_scale,
                                                reference_attention_weight, audio_attention_weight, seed,
                                                **fast_modes)
        hooks = Hooks(progress=progress_reporter(settings.num_inference_steps * len(plan.windows)),
                      cancel=cancel_check())
        try:
            # uint8 as the library writes them (rounded; truncated in compat "original"), then IMAGE floats,
            # filled chunk by chunk into one preallocated batch.
            decoded = pipeline.generate(reference, kps_images, Wav2Vec2Features(audio_embeds.features), plan,
                                        settings, hooks, output="uint8")
            if median_filter_enabled(median_filter, compat):
                decoded = median_filtered_chunks(decoded)
            images = torch.empty((num_frames, height, width, 3), dtype=torch.float32)
            done = 0
            decode_progress = stage_progress(num_frames)  # after sampling: decoding (+ filter) in frames
            for chunk in decoded:
                images[done : done + len(chunk)] = _types.uint8_to_image(chunk)
                done += len(chunk)
                decode_progress(done)
        finally:
            pipeline.finish()
        return io.NodeOutput(images, float(fps))


NODES = [VExpressSampler]
