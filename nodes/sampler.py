"""``VExpressSampler``: reference image + kps track + audio embeddings -> video frames (IMAGE) and their fps."""

from __future__ import annotations

from . import _types, _widgets
from ._comfy import io

CATEGORY = "V-Express/sampling"


class VExpressSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VExpressSampler",
            display_name="V-Express Sampler",
            category=CATEGORY,
            description=(
                "Generates the talking-head video frames: the reference portrait is animated by the kps track "
                "(head pose) and the audio embeddings (lips), in overlapping windows of frames with a zero-SNR DDIM "
                "sampler and classifier-free guidance (V-Express, Tencent AI Lab, arXiv 2406.02511). Returns IMAGE "
                "frames and their fps, for SaveVideo or core Create Video."
            ),
            inputs=[
                _types.PipeType.Input("pipe", tooltip="The V-Express models from LoadVExpressModels."),
                io.Image.Input(
                    "reference_image",
                    tooltip="The portrait to animate (first image of a batch). Best: a square, face-centred crop.",
                ),
                _types.KpsType.Input(
                    "kps",
                    tooltip="The kps track from RetargetKps; resampled to the video's frames if its length differs.",
                ),
                _types.AudioEmbedsType.Input("audio_embeds", tooltip="The speech features from AudioEmbed."),
                _widgets.width(
                    tooltip=(
                        "Video width in pixels (multiple of 8). The model is trained at 512x512; other sizes degrade."
                    ),
                ),
                _widgets.height(
                    tooltip=(
                        "Video height in pixels (multiple of 8). The model is trained at 512x512; other sizes degrade."
                    ),
                ),
                io.Int.Input(
                    "steps", default=25, min=1, max=200,
                    tooltip="Denoising steps. 25 is the original default; 15-20 is faster with slightly less detail.",
                ),
                io.Float.Input(
                    "guidance_scale", default=3.5, min=1.0, max=20.0, step=0.05,
                    tooltip=(
                        "Classifier-free guidance: how strongly the reference, kps and audio steer the result. 3.5 "
                        "is the original default (its test script uses 2.5); 1.0 turns guidance off (twice as fast)."
                    ),
                ),
                io.Int.Input(
                    "seed", default=42, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                    tooltip="Seed of the initial noise; the same seed and settings give the same video.",
                ),
                io.Float.Input(
                    "reference_attention_weight", default=1.0, min=0.0, max=3.0, step=0.01,
                    tooltip=(
                        "Strength of the reference-image attention (identity and appearance). 1.0 is the trained "
                        "value; the authors suggest 0.9-1.0 (0.95 with a stronger audio weight)."
                    ),
                ),
                io.Float.Input(
                    "audio_attention_weight", default=1.0, min=0.0, max=10.0, step=0.01,
                    tooltip=(
                        "Strength of the audio attention (lip motion). 1.0 is the trained value and looks natural; "
                        "up to 3.0 (the original script's default, with reference 0.95) makes the lips move more. "
                        "The authors suggest 1.0-3.0."
                    ),
                ),
                _widgets.context_frames(
                    tooltip=(
                        "Frames the model sees at once (at most 32, the motion modules' limit). Longer videos are "
                        "made in overlapping windows of this size. 24 is the original default."
                    ),
                ),
                _widgets.context_overlap(
                    tooltip=(
                        "Frames shared by neighbouring windows; their predictions are averaged so the windows join "
                        "smoothly. Must be smaller than context_frames. 4 is the original default."
                    ),
                ),
                _widgets.compat(
                    tooltip=(
                        "fixed: corrected numerics (float32 window averaging, kps resampled by time, frames rounded "
                        "to 8 bit). original: the original implementation's numerics (averaging in the model dtype, "
                        "kps resampled by index, frames truncated), for parity with its results."
                    ),
                ),
                _widgets.median_filter(
                    tooltip=(
                        "The original's 3x3x3 median filter over time and space after decoding: less flicker but "
                        "softer detail. auto: on with compat 'original' (the original always filters), else off."
                    ),
                ),
            ],
            outputs=[
                io.Image.Output("images", display_name="images", tooltip="The generated video frames."),
                io.Float.Output(
                    "fps", display_name="fps", tooltip="Frame rate of the frames (SaveVideo / core Create Video)."
                ),
            ],
        )

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
                context_frames: int, context_overlap: int, compat: str, median_filter: str = "auto") -> io.NodeOutput:
        import torch

        from ..vexpress_model.conditioning.kps_images import kps_image_source
        from ..vexpress_model.conditioning.kps_sequence import kps_for_frames
        from ..vexpress_model.inputs.image import load_reference_image
        from ..vexpress_model.outputs.median_filter import median_filter_enabled, median_filtered_chunks
        from ..vexpress_model.pipeline.audio_input import Wav2Vec2Features
        from ..vexpress_model.pipeline.hooks import Hooks, SamplingSettings
        from ..vexpress_model.pipeline.sampler import VExpressPipeline
        from ..vexpress_model.pipeline.timing import FramePlan, context_windows
        from .memory_management import ComfyPlacement, compute_device
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

        placement = ComfyPlacement(pipe.patchers, offload=pipe.offload)
        pipeline = VExpressPipeline(pipe.models, device=compute_device(), compat=compat, placement=placement,
                                    offload=pipe.offload)
        settings = SamplingSettings.from_values(steps, guidance_scale, reference_attention_weight,
                                                audio_attention_weight, seed)
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
