"""``VExpressPipeline``: reference image, per-frame kps images and per-frame audio windows in, video frames out.

One object serves the command line and the ComfyUI nodes. Its stages can be called one by one (the nodes do) or
together through :meth:`VExpressPipeline.generate`:

1. :meth:`~VExpressPipeline.encode_reference` -- VAE ``latent_dist.mean * 0.18215`` of the reference image, then
   the ReferenceNet once (timestep 0, zero text context) -> the reference bank (docs/spec.md §3.2, §4.9).
2. :meth:`~VExpressPipeline.encode_kps` -- V-Kps guider on the kps images in [0, 1], in chunks; only the
   conditional features are kept (the unconditional ones are zeros), and identical frames (``fix_face``) are
   computed once and broadcast.
3. :meth:`~VExpressPipeline.encode_audio` -- audio tokens ``[T, 5, D]`` from a typed audio input, running only the
   stages it still needs: :meth:`~VExpressPipeline.audio_features` (wav2vec2 over the whole clip), per-frame windows,
   :meth:`~VExpressPipeline.project_audio` (the audio projection).
4. :meth:`~VExpressPipeline.sample` -- DDIM (docs/spec.md §4.12) with classifier-free guidance that drops all three
   conditions (docs/spec.md §4.13), the windows' guided v-predictions averaged with equal weights, then one scheduler
   step per timestep over all frames.
5. :meth:`~VExpressPipeline.decode` -- VAE decode in chunks, handed out as an iterator of frame batches.

Output-identical speed-ups over the original (PERF.md §4A): the reference keys/values are projected once per
video and the unconditional reference/audio attentions are the constants they reduce to (the UNet's
``fast_paths``); all windows of a step run in as few UNet calls as the memory budget allows; latents, audio tokens
and kps features stay on the compute device between steps; only the conditional kps features are stored; no
per-frame Python loops in the hot path.

``compat="original"`` reproduces the original numerically: the per-window contributions are divided by the
frame's window count and accumulated in the run dtype, and latents are kept in the run dtype (docs/spec.md §10 #11).
``compat="fixed"`` keeps the latents and the accumulation in float32 (identical in an fp32 run).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ..conditioning.audio_features import (
    DEFAULT_CHUNK_SECONDS,
    AudioInput,
    AudioTokens,
    AudioWindows,
    Wav2Vec2Features,
    Waveform16k,
    as_audio_input,
    audio_windows,
    wav2vec2_features,
)
from ..conditioning.kps_images import KpsImageSource, as_uint8_frames, kps_image_reader
from ..errors import InputError
from ..options import Compat, check_compat
from .denoise import DDIM_CONFIG, UNetLike, UNetRunner, WindowDenoiser
from .hooks import Hooks, SamplingSettings
from .memory import DEVICE_CONDITION_BUDGET_BYTES, MemoryPolicy, ModulePlacement, Placement, module_device
from .windows import FramePlan, KpsFeatures, WindowPlan, check_windows

logger = logging.getLogger("vexpress.pipeline")

# SD-1.5 VAE latent scale, hard-coded by the original (docs/spec.md §3.7).
LATENT_SCALE = 0.18215


def reference_image_tensor(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 RGB ``[H, W, 3]`` -> float32 ``[1, 3, H, W]`` in [-1, 1], as diffusers' ``VaeImageProcessor`` does
    (``x / 255`` then ``2x - 1``, both in float32). A float tensor ``[1, 3, H, W]`` is passed through."""
    tensor = torch.as_tensor(image)
    if tensor.is_floating_point():
        if tensor.ndim != 4 or tensor.shape[:2] != (1, 3):
            raise InputError(f"a float reference image must be [1, 3, H, W] in [-1, 1], got {tuple(tensor.shape)}")
        return tensor.float()
    frames = as_uint8_frames(tensor, "the reference image")
    if frames.shape[0] != 1:
        raise InputError(f"one reference image expected, got {frames.shape[0]}")
    return (frames.permute(0, 3, 1, 2).float() / 255.0) * 2.0 - 1.0


def frames_to_uint8(frames: torch.Tensor, compat: Compat) -> torch.Tensor:
    """Float frames in [0, 1] -> uint8. "original" truncates like ``(x * 255).astype(uint8)``; "fixed" rounds."""
    scaled = frames.float() * 255.0
    if compat != "original":
        scaled = scaled.round()
    return scaled.clamp_(0, 255).to(torch.uint8)

@dataclass
class ReferenceState:
    """What the reference pass produces: the scaled reference latent and the ReferenceNet bank."""

    latent: torch.Tensor  # [1, 4, h, w], run dtype
    bank: dict[str, torch.Tensor]  # module path -> [1, h*w, C]


class VExpressPipeline:
    """The V-Express generation pipeline over a loaded model set (``models.load_vexpress_models``).

    ``models`` needs the attributes ``vae``, ``reference_net``, ``denoising_unet`` (a :class:`UNetLike`),
    ``kps_guider``, ``audio_projection`` and, for :meth:`audio_features`, ``audio_encoder`` and
    ``audio_feature_extractor``; ``dtype`` (the run dtype) is taken from ``models.dtype`` or the UNet's parameters.

    Speed/memory knobs (none changes the result beyond float rounding):

    * ``fast_paths`` -- the UNet's once-per-video reference K/V and constant unconditional attentions.
    * ``window_batch_size``, ``memory_budget_bytes`` -- windows per UNet call (see :class:`MemoryPolicy`, held
      as ``self.memory``).
    * ``offload`` -- each network leaves the device when its stage ends (see :class:`ModulePlacement`); kps
      features are then kept in host memory and moved per UNet call. ``placement`` replaces the default placement
      object altogether (the ComfyUI nodes pass theirs).
    * ``compile_unet`` -- ``torch.compile`` the UNet (off by default; falls back to eager if compiling fails).
    * ``kps_chunk_frames``, ``audio_chunk_frames``, ``decode_chunk_frames`` -- frames per guider / audio
      projection / VAE-decode call. ``decode_chunk_frames`` None: 8 on a GPU, 2 on a CPU (where bigger decode
      batches only add memory: measured 12-30 % slower at 8 than one frame per call on the CPU proxy).
    * ``process_group`` -- a ``torch.distributed`` group whose processes share the windows of each step.
    """

    def __init__(
        self,
        models: Any,
        *,
        device: torch.device | str | None = None,
        compat: Compat = "fixed",
        placement: Placement | None = None,
        offload: bool = False,
        fast_paths: bool = True,
        window_batch_size: int | None = None,
        memory_budget_bytes: int | None = None,
        compile_unet: bool = False,
        kps_chunk_frames: int = 16,
        audio_chunk_frames: int = 256,
        decode_chunk_frames: int | None = None,
        process_group: Any = None,
    ) -> None:
        check_compat(compat)
        self.models = models
        unet: nn.Module = models.denoising_unet
        if device is None:
            device = module_device(unet) or torch.device("cpu")
        self.device = torch.device(device)
        dtype = getattr(models, "dtype", None)
        self.dtype: torch.dtype = dtype if isinstance(dtype, torch.dtype) else next(unet.parameters()).dtype
        self.compat: Compat = compat
        self.offload = offload
        self.placement: Placement = placement or ModulePlacement(self.device, offload=offload)
        self.fast_paths = fast_paths
        self.process_group = process_group
        self.memory = MemoryPolicy(
            self.device,
            self.dtype,
            window_batch_size=window_batch_size,
            memory_budget_bytes=memory_budget_bytes,
            condition_device_budget_bytes=0 if offload else DEVICE_CONDITION_BUDGET_BYTES,
        )
        self.unet_runner = UNetRunner(unet, compile_unet=compile_unet)
        self.kps_chunk_frames = max(1, kps_chunk_frames)
        self.audio_chunk_frames = max(1, audio_chunk_frames)
        if decode_chunk_frames is None:
            decode_chunk_frames = 2 if self.device.type == "cpu" else 8
        self.decode_chunk_frames = max(1, decode_chunk_frames)
        # Counters for tests and benchmarks.
        self.stats: dict[str, int] = {"unet_calls": 0, "unet_images": 0, "reference_net_calls": 0,
                                      "kps_guider_calls": 0, "vae_decode_calls": 0}

    def _run_guider(self, kps_images: torch.Tensor) -> torch.Tensor:
        """Guider features ``[1, C0, n, h, w]`` of uint8 kps images ``[n, H, W, 3]``."""
        # float32 first, then the run dtype, as the original's VaeImageProcessor(do_normalize=False) + .to(dtype) does.
        pixels = (kps_images.permute(3, 0, 1, 2).unsqueeze(0).float() / 255.0).to(self.device, self.dtype)
        self.stats["kps_guider_calls"] += 1
        return self.models.kps_guider(pixels)

    # ------------------------------------------------------------------------------------------------ stages

    @contextlib.contextmanager
    def _stage(self, name: str, roles: Sequence[str], activation_bytes: int = 0) -> Iterator[None]:
        modules: dict[str, nn.Module] = {}
        for role in roles:
            module = getattr(self.models, role, None)
            if module is None:
                raise InputError(f"the loaded model set has no {role}, which the {name} stage needs")
            modules[role] = module
        self.placement.enter_stage(name, modules, activation_bytes=int(activation_bytes))
        try:
            yield
        finally:
            # Also after an error or a cancel: in offload mode the stage's networks leave the device either way.
            self.placement.exit_stage(name, modules)

    def finish(self) -> None:
        """End of a generation: lets the placement release what it still holds (see ``Placement.finish``)."""
        self.placement.finish()

    @torch.inference_mode()
    def encode_reference(self, image: np.ndarray | torch.Tensor, hooks: Hooks | None = None) -> ReferenceState:
        """Reference latent (VAE mean x 0.18215) and the ReferenceNet bank, once per video.

        ``image``: uint8 RGB ``[H, W, 3]`` at the output size (``inputs.load_reference_image``), or a float
        ``[1, 3, H, W]`` tensor already in [-1, 1].
        """
        hooks = hooks or Hooks()
        pixels = reference_image_tensor(image)
        if pixels.shape[-1] % 8 or pixels.shape[-2] % 8:
            raise InputError(f"image width and height must be multiples of 8, got {tuple(pixels.shape[-2:])}")
        with self._stage("reference", ("vae", "reference_net")):
            pixels = pixels.to(self.device, self.dtype)
            latent = self.models.vae.encode(pixels).latent_dist.mean * LATENT_SCALE
            hooks.emit("ref_latent", latent)
            bank = self.models.reference_net(latent)
            self.stats["reference_net_calls"] += 1
        return ReferenceState(latent=latent, bank=dict(bank))

    @torch.inference_mode()
    def encode_kps(
        self,
        kps_images: np.ndarray | torch.Tensor | KpsImageSource,
        num_frames: int | None = None,
        hooks: Hooks | None = None,
    ) -> KpsFeatures:
        """Conditional V-Kps features for uint8 kps images ``[T, H, W, 3]`` (RGB as drawn).

        A single image ``[H, W, 3]`` (or ``[1, H, W, 3]``) with ``num_frames`` is one pose for every frame
        (``fix_face``); a sequence whose frames are all equal is detected and treated the same way. Either way the
        guider runs on one frame and the result is broadcast -- exact, as the guider has no temporal interaction.
        ``kps_images`` may also be a callable ``(start, stop) -> uint8 [stop - start, H, W, 3]`` (with
        ``num_frames``), so that a long clip's kps images never exist all at once.
        """
        hooks = hooks or Hooks()
        read, count, total = kps_image_reader(kps_images, num_frames)
        broadcast = count == 1 and total != 1
        with self._stage("kps", ("kps_guider",)):
            features: torch.Tensor | None = None
            for start in range(0, count, self.kps_chunk_frames):
                hooks.check_cancel()
                out = self._run_guider(read(start, min(count, start + self.kps_chunk_frames)))
                if features is None:
                    shape = (1, out.shape[1], count, out.shape[3], out.shape[4])
                    num_bytes = math.prod(shape) * out.element_size()
                    if callable(kps_images) and self.memory.recompute_kps(num_bytes):
                        def compute(window: range) -> torch.Tensor:
                            return self._run_guider(read(window.start, window.stop))[0]

                        return KpsFeatures(out[:, :, :1], total, compute=compute)
                    store = self.memory.condition_device(num_bytes)
                    # Pinned host memory makes the per-call copies to a CUDA device asynchronous.
                    pin = store.type == "cpu" and self.device.type == "cuda"
                    features = torch.empty(shape, dtype=self.dtype, device=store, pin_memory=pin)
                features[:, :, start : start + out.shape[2]] = out.to(features.device)
        assert features is not None
        return KpsFeatures(features=features, num_frames=total, broadcast=broadcast)

    @torch.inference_mode()
    def audio_features(
        self,
        waveform_16k: np.ndarray | torch.Tensor,
        hooks: Hooks | None = None,
        *,
        chunk_seconds: float | None = None,
    ) -> torch.Tensor:
        """wav2vec2 features ``[N, D]`` (about 50 per second of audio) of a mono 16 kHz waveform ``[N]``, computed
        over the whole clip (``conditioning.audio_features.wav2vec2_features``) in the ``audio`` stage with the
        audio encoder. On the device, in the encoder's dtype; ``chunk_seconds`` overrides the length of the pieces
        in which a long clip's convolutional front end runs (the result is the same)."""
        hooks = hooks or Hooks()
        hooks.check_cancel()
        if chunk_seconds is None:
            chunk_seconds = DEFAULT_CHUNK_SECONDS
        with self._stage("audio", ("audio_encoder",)):
            encoder, extractor = self.models.audio_encoder, self.models.audio_feature_extractor
            return wav2vec2_features(encoder, extractor, waveform_16k, chunk_seconds)

    @torch.inference_mode()
    def project_audio(self, audio_windows: np.ndarray | torch.Tensor, hooks: Hooks | None = None) -> torch.Tensor:
        """Audio tokens ``[T, n, D]`` (run dtype, on the device) from per-frame wav2vec2 windows ``[T, 10, D_w]``."""
        hooks = hooks or Hooks()
        windows = torch.as_tensor(audio_windows)
        if windows.ndim != 3:
            raise InputError(f"audio windows must be [T, 10, D], got {tuple(windows.shape)}")
        with self._stage("audio", ("audio_projection",)):
            tokens = self._project(windows)
        hooks.emit("audio_proj_output", tokens)
        return tokens

    def _project(self, windows: torch.Tensor) -> torch.Tensor:
        projection = self.models.audio_projection
        chunks = []
        for start in range(0, windows.shape[0], self.audio_chunk_frames):
            chunk = windows[start : start + self.audio_chunk_frames].to(self.device, self.dtype)
            chunks.append(projection(chunk))
        return torch.cat(chunks) if len(chunks) > 1 else chunks[0]

    @torch.inference_mode()
    def encode_audio(
        self, audio: AudioInput | np.ndarray | torch.Tensor, num_frames: int, hooks: Hooks | None = None
    ) -> torch.Tensor:
        """Audio tokens ``[T, n, D]`` (run dtype, on the device) for ``num_frames`` video frames, running only the
        audio stages that ``audio`` still needs: a ``Waveform16k`` -> :meth:`audio_features`;
        ``Wav2Vec2Features`` of the whole clip (on any device) -> per-frame windows (``audio_windows``, ``num_pad``
        from the model's constants); ``AudioWindows`` -> :meth:`project_audio`; ``AudioTokens`` are returned as they
        are. A bare array is a waveform ``[N]`` or windows ``[T, 10, D]``."""
        hooks = hooks or Hooks()
        audio = as_audio_input(audio)
        if isinstance(audio, AudioTokens):
            return torch.as_tensor(audio.array)
        if isinstance(audio, Waveform16k):
            audio = Wav2Vec2Features(self.audio_features(audio.array, hooks))
        if isinstance(audio, Wav2Vec2Features):
            num_pad = int(getattr(getattr(self.models, "constants", None), "num_pad_audio_frames", 2))
            audio = AudioWindows(audio_windows(audio.array, num_frames, num_pad=num_pad))
        return self.project_audio(audio.array, hooks)

    # ---------------------------------------------------------------------------------------------- sampling

    def initial_noise(self, num_frames: int, latent_hw: tuple[int, int], seed: int) -> torch.Tensor:
        """The original's initial latents: the first draw of a freshly seeded CPU generator, in the run dtype.

        On CPU torch draws different numbers per dtype, so fp16 noise is not rounded fp32 noise; drawing in the run
        dtype on CPU is what makes a seed mean the same video as in the original. ``init_noise_sigma`` is 1.0.
        """
        generator = torch.Generator(device="cpu").manual_seed(int(seed))
        shape = (1, 4, num_frames, latent_hw[0], latent_hw[1])
        return torch.randn(shape, generator=generator, dtype=self.dtype, device="cpu")

    @torch.inference_mode()
    def sample(
        self,
        reference: ReferenceState,
        kps: KpsFeatures,
        audio_tokens: torch.Tensor,
        windows: Sequence[range] | FramePlan,
        settings: SamplingSettings | None = None,
        hooks: Hooks | None = None,
    ) -> torch.Tensor:
        """The windowed CFG DDIM loop (:mod:`.denoise`); returns the final latents ``[1, 4, T, h, w]`` on the device.

        ``windows`` come from :func:`~vexpress_model.pipeline.windows.plan_frames` (a ``FramePlan`` is accepted).
        """
        settings = settings or SamplingSettings()
        hooks = hooks or Hooks()
        if isinstance(windows, FramePlan):
            windows = windows.windows
        windows = tuple(windows)
        num_frames = kps.num_frames
        if audio_tokens.shape[0] != num_frames:
            raise InputError(f"{audio_tokens.shape[0]} audio frames for {num_frames} kps frames")
        frames_per_window = check_windows(windows, num_frames)
        if settings.num_inference_steps < 1:
            raise InputError(f"num_inference_steps must be at least 1, got {settings.num_inference_steps}")

        from diffusers import DDIMScheduler

        # A scheduler per call: set_timesteps mutates it, and the pipeline object may be shared (ComfyUI).
        scheduler = DDIMScheduler(**DDIM_CONFIG)
        scheduler.set_timesteps(settings.num_inference_steps)
        cfg = settings.guidance_scale > 1.0
        h, w = kps.features.shape[-2:]
        if tuple(reference.latent.shape[-2:]) != (h, w):
            raise InputError(f"reference latent {tuple(reference.latent.shape[-2:])} and kps features {(h, w)} differ")

        latents = self.initial_noise(num_frames, (h, w), settings.seed) * scheduler.init_noise_sigma
        hooks.emit("init_latents", latents)
        # fixed: a float32 master copy of the latents (the UNet sees the run dtype); original: the run dtype
        # throughout, like the original's fp16 latents.
        loop_dtype = self.dtype if self.compat == "original" else torch.float32
        latents = latents.to(self.device, loop_dtype)

        audio_tokens = audio_tokens.to(self.device, self.dtype)
        window_bytes = self.memory.window_bytes(frames_per_window, cfg, h * w, kps.channels)
        # Recomputed kps features need the guider beside the UNet.
        roles = ("denoising_unet",) if kps.compute is None else ("denoising_unet", "kps_guider")
        with self._stage("denoise", roles, activation_bytes=window_bytes):
            # Sized once the UNet is in place, so that free device memory is measured with its weights loaded.
            per_batch = self.memory.windows_per_call(frames_per_window, cfg, h * w, kps.channels)
            plan = WindowPlan.build(windows, num_frames, per_batch, cfg, self.device, self.process_group)
            logger.info(
                "sampling %d frames: %d window%s of %d frames in %d UNet call%s per step, %d step%s, CFG %s",
                num_frames, plan.num_windows, "s"[: plan.num_windows != 1], frames_per_window, len(plan.batches),
                "s"[: len(plan.batches) != 1], settings.num_inference_steps, "s"[: settings.num_inference_steps != 1],
                "on" if cfg else "off",
            )
            unet: UNetLike = self.models.denoising_unet
            previous_fast = unet.fast_paths
            unet.fast_paths = self.fast_paths
            try:
                context = unet.prepare_reference(
                    {key: value.to(self.device, self.dtype) for key, value in reference.bank.items()}
                )
                denoiser = WindowDenoiser(self.unet_runner, self.device, self.dtype, self.compat, settings, hooks,
                                          self.stats, self.process_group)
                latents = denoiser.run(latents, scheduler, plan, context, kps, audio_tokens)
            finally:
                unet.fast_paths = previous_fast
        hooks.emit("latents_final", latents)
        return latents

    # ------------------------------------------------------------------------------------------------ decode

    def decode(
        self,
        latents: torch.Tensor,
        *,
        output: Literal["uint8", "float"] = "uint8",
        hooks: Hooks | None = None,
    ) -> Iterator[np.ndarray]:
        """Decoded frames in chunks of ``decode_chunk_frames``: ``[n, H, W, 3]`` uint8 (``frames_to_uint8``) or
        float32 in [0, 1]. Only one chunk is held as floats at a time; with a ``dump`` hook the whole video is kept
        for the ``video_float`` / ``frames_uint8`` dumps.

        With a ``process_group`` the decode is split over its processes and gathered to rank 0 in frame order
        (:func:`~.distributed.gathered_decode`): rank 0 gets every frame, the other ranks nothing, and every rank
        must iterate all the same (they decode and send while iterated)."""
        hooks = hooks or Hooks()
        if output not in ("uint8", "float"):
            raise InputError(f"output must be 'uint8' or 'float', got {output!r}")
        if self.process_group is None:
            yield from self._decode(latents, output, hooks)
            return
        from .distributed import gathered_decode

        def decode_mine(mine: torch.Tensor, as_float: bool) -> Iterator[np.ndarray]:
            return self._decode(mine, "float" if as_float else "uint8", Hooks(cancel=hooks.cancel))

        yield from gathered_decode(
            decode_mine, latents, self.process_group, chunk_frames=self.decode_chunk_frames,
            frame_size=self._frame_size(latents), to_uint8=lambda frames: frames_to_uint8(frames, self.compat),
            output=output, hooks=hooks,
        )

    def _frame_size(self, latents: torch.Tensor) -> tuple[int, int]:
        """Decoded frame size from the latent size: the VAE upsamples by 2 per block after the first (diffusers'
        ``vae_scale_factor``; 8 for SD's VAE)."""
        blocks = getattr(getattr(self.models.vae, "config", None), "block_out_channels", None)
        factor = 2 ** (len(blocks) - 1) if blocks else 8
        return int(latents.shape[-2]) * factor, int(latents.shape[-1]) * factor

    def _decode(self, latents: torch.Tensor, output: str, hooks: Hooks) -> Iterator[np.ndarray]:
        keep = hooks.dump is not None
        kept_float: list[np.ndarray] = []
        kept_uint8: list[np.ndarray] = []
        num_frames = latents.shape[2]
        with self._stage("decode", ("vae",)):
            vae = self.models.vae
            for start in range(0, num_frames, self.decode_chunk_frames):
                hooks.check_cancel()
                with torch.inference_mode():
                    z = latents[0, :, start : start + self.decode_chunk_frames].transpose(0, 1)
                    z = (1 / LATENT_SCALE) * z.to(self.device, self.dtype)
                    image = vae.decode(z).sample
                    self.stats["vae_decode_calls"] += 1
                    # The original clamps in the run dtype and converts to float32 afterwards.
                    image = image if self.compat == "original" else image.float()
                    image = (image / 2 + 0.5).clamp(0, 1).float().permute(0, 2, 3, 1).to("cpu")
                    frames_u8 = frames_to_uint8(image, self.compat) if (output == "uint8" or keep) else None
                if keep:
                    kept_float.append(image.numpy())
                    assert frames_u8 is not None
                    kept_uint8.append(frames_u8.numpy())
                yield image.numpy() if output == "float" else frames_u8.numpy()  # type: ignore[union-attr]
        if keep and hooks.dump is not None:
            video = np.concatenate(kept_float)  # [T, H, W, 3]
            hooks.dump("video_float", np.ascontiguousarray(video.transpose(3, 0, 1, 2)[None]))
            hooks.dump("frames_uint8", np.concatenate(kept_uint8))

    # ---------------------------------------------------------------------------------------------- together

    def generate(
        self,
        reference_image: np.ndarray | torch.Tensor,
        kps_images: np.ndarray | torch.Tensor | KpsImageSource,
        audio: AudioInput | np.ndarray | torch.Tensor,
        plan: FramePlan,
        settings: SamplingSettings | None = None,
        hooks: Hooks | None = None,
        *,
        output: Literal["uint8", "float"] = "uint8",
    ) -> Iterator[np.ndarray]:
        """All stages; returns the iterator of decoded frame chunks once sampling is done.

        With a ``process_group`` (a torchrun launch) every process runs every stage: each computes the reference
        pass, the kps features and the audio tokens itself rather than receiving them from rank 0 -- they cost less
        than one denoising step (benchmarks/bench_distributed.py, "prep"), every process needs them at once, and a
        broadcast of the reference bank and kps features would move hundreds of MB per clip while the others wait.
        The initial noise comes from the seed on every process; identical inputs, code and device type give
        identical values. The windows of each step are shared out (:mod:`.windows`) and the decode is gathered to
        rank 0 (:meth:`decode`), whose iterator alone yields frames.

        ``audio``: any input :meth:`encode_audio` takes (a ``Waveform16k``: wav2vec2 runs here, ``Wav2Vec2Features``,
        ``AudioWindows``, ``AudioTokens``, or a bare waveform ``[N]`` or windows ``[T, 10, D]``).
        ``kps_images``: see :meth:`encode_kps`. Call :meth:`finish` after consuming the iterator (offload mode).
        """
        hooks = hooks or Hooks()
        reference = self.encode_reference(reference_image, hooks)
        kps = self.encode_kps(kps_images, plan.num_frames, hooks)
        tokens = self.encode_audio(audio, plan.num_frames, hooks)
        latents = self.sample(reference, kps, tokens, plan.windows, settings, hooks)
        return self.decode(latents, output=output, hooks=hooks)
