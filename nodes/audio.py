"""``VExpressAudioEmbed``: speech AUDIO -> wav2vec2 features for the sampler, plus the frame count they give."""

from __future__ import annotations

from . import _types, _widgets
from ._comfy import io
from ._texts import NodeTexts

CATEGORY = "V-Express/audio"


class VExpressAudioEmbed(io.ComfyNode):
    """Speech AUDIO -> wav2vec2 features, the AUDIO to mux, and the frame count at the chosen fps."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        # compat is optional so that workflows saved before it existed still run (they get "fixed").
        inputs = [_types.PipeType.Input("pipe"), io.Audio.Input("audio"), _widgets.fps("fps"),
                  _widgets.compat(optional=True)]
        outputs = [
            _types.AudioEmbedsType.Output("audio_embeds"),
            io.Audio.Output("audio_out"),
            io.Int.Output("frame_count"),
            io.Float.Output("fps_out"),
        ]
        return NodeTexts("VExpressAudioEmbed", CATEGORY).schema(inputs, outputs)

    @classmethod
    def execute(cls, pipe, audio, fps: float, compat: str = "fixed") -> io.NodeOutput:
        from ..vexpress_model.inputs.audio import audio_from_comfy, to_mono_16k
        from ..vexpress_model.pipeline.hooks import Hooks
        from ..vexpress_model.pipeline.sampler import VExpressPipeline
        from ..vexpress_model.pipeline.windows import frame_count
        from .memory_management import ComfyPlacement, compute_device
        from .progress import cancel_check

        audio = _types.first_audio_item(_types.require_audio(audio, "audio"))
        decoded = audio_from_comfy(audio, name="the AUDIO input")
        waveform_16k = to_mono_16k(decoded.waveform, decoded.sample_rate, compat=compat)
        duration_s = len(waveform_16k) / 16000.0
        num_frames = frame_count(duration_s, fps)

        placement = ComfyPlacement(pipe.patchers, offload=pipe.offload)
        pipeline = VExpressPipeline(pipe.models, device=compute_device(), placement=placement, offload=pipe.offload)
        try:
            features = pipeline.audio_features(waveform_16k, Hooks(cancel=cancel_check()))
        finally:
            pipeline.finish()
        embeds = _types.AudioEmbeds(
            # In ComfyUI's intermediate (host) memory: the execution cache holds it while the device is reused.
            features=features.detach().to("cpu"),
            duration_s=duration_s,
            fps=float(fps),
            num_frames=num_frames,
            audio=audio,
        )
        return io.NodeOutput(embeds, audio, num_frames, float(fps))


NODES = [VExpressAudioEmbed]
