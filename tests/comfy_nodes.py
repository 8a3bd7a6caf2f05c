"""What the ComfyUI node tests (tests/test_nodes_comfy*.py) share besides the fixtures in conftest.py: the
small sizes and sampler settings they run with, and one sampler call."""

from __future__ import annotations

FPS = 6.0
SMALL = {"width": 64, "height": 64}
SAMPLER_SMALL = {
    **SMALL, "steps": 2, "guidance_scale": 3.5, "seed": 42, "reference_attention_weight": 1.0,
    "audio_attention_weight": 1.0, "context_frames": 8, "context_overlap": 2, "compat": "fixed",
}


def run_sampler(node, pipe, portrait, kps, embeds, **overrides):
    settings = {**SAMPLER_SMALL, **overrides}
    return node("sampler").VExpressSampler.execute(
        pipe=pipe, reference_image=portrait, kps=kps, audio_embeds=embeds[0], **settings
    )
