"""``VExpressAudioEmbed``: speech AUDIO -> wav2vec2 features for the sampler, plus the frame count they give."""

from __future__ import annotations

from . import _types, _widgets
from ._comfy import io

CATEGORY = "V-Express/audio"


class VExpressAudioEmbed(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VExpressAudioEmbed",
            display_name="AudioEmbed",
            category=CATEGORY,
            description=(
                "Encodes speech with wav2vec2 (facebook/wav2vec2-base-960h) for the V-Express sampler. Takes any "
                "core AUDIO (any sample rate, mono or stereo; it is mixed to mono 16 kHz for the encoder) and "
                "returns the embeddings, the AUDIO that was encoded (to mux into the video) and the number of video "
                "frames at the chosen fps."
            ),
            inputs=[
                _types.PipeType.Input("pipe", tooltip="The V-Express models from LoadVExpressModels."),
                io.Audio.Input(
                    "audio", tooltip="The speech that drives the lips (core Load Audio, or a video's audio)."
                ),
                _widgets.fps("fps", tooltip=(
                    "Frame rate of the video to generate (30 is the original default, 25 is 17% faster). More "
                    "frames cost proportionally more time. The video lasts as long as the audio."
                )),
            ],
            outputs=[
                _types.AudioEmbedsType.Output(
                    "audio_embeds", display_name="audio_embeds", tooltip="The speech features, for the sampler."
                ),
                io.Audio.Output(
                    "audio_out", display_name="audio",
                    tooltip="The AUDIO that was encoded (first item of a batch), to mux into the video (SaveVideo).",
                ),
                io.Int.Output(
                    "frame_count", display_name="frame_count",
                    tooltip="Number of video frames the audio gives at this fps; connect it to RetargetKps.",
                ),
                io.Float.Output("fps_out", display_name="fps", tooltip="The frame rate, passed on for RetargetKps."),
            ],
        )

    @classmethod
    def execute(cls, pipe, audio, fps: float) -> io.NodeOutput:
        from ..vexpress_model.inputs.audio import audio_from_comfy, to_mono_16k
        from ..vexpress_model.pipeline.hooks import Hooks
        from ..vexpress_model.pipeline.sampler import VExpressPipeline
        from ..vexpress_model.pipeline.timing import frame_count
        from .memory_management import ComfyPlacement, compute_device
        from .progress import cancel_check

        audio = _types.first_audio_item(_types.require_audio(audio, "audio"))
        decoded = audio_from_comfy(audio, name="the AUDIO input")
        waveform_16k = to_mono_16k(decoded.waveform, decoded.sample_rate)
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
