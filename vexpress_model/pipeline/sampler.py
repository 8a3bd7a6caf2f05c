"""``VExpressPipeline``: reference image, per-frame kps images and per-frame audio windows in, video frames out.

One object serves the command line and the ComfyUI nodes. Its stages can be called one by one (the nodes do) or
together through :meth:`VExpressPipeline.generate`:

1. :meth:`~VExpressPipeline.encode_reference` -- VAE ``latent_dist.mean * 0.18215`` of the reference image, then
   the ReferenceNet once (timestep 0, zero text context) -> the reference bank (SPEC §3.2, §4.9).
2. :meth:`~VExpressPipeline.encode_kps` -- V-Kps guider on the kps images in [0, 1], in chunks; only the
   conditional features are kept (the unconditional ones are zeros), and identical frames (``fix_face``) are
   computed once and broadcast.
3. :meth:`~VExpressPipeline.audio_features` (wav2vec2 over the whole clip) and
   :meth:`~VExpressPipeline.audio_tokens` (per-frame windows -> audio projection tokens ``[T, 5, D]``), or both at
   once with :meth:`~VExpressPipeline.encode_audio`; :meth:`~VExpressPipeline.project_audio` takes ready windows.
4. :meth:`~VExpressPipeline.sample` -- DDIM (SPEC §4.12) with classifier-free guidance that drops all three
   conditions (SPEC §4.13), the windows' guided v-predictions averaged with equal weights, then one scheduler
   step per timestep over all frames.
5. :meth:`~VExpressPipeline.decode` -- VAE decode in chunks, handed out as an iterator of frame batches.

Output-identical speed-ups over the original (PERF.md §4A): the reference keys/values are projected once per
video and the unconditional reference/audio attentions are the constants they reduce to (the UNet's
``fast_paths``); all windows of a step run in as few UNet calls as the memory budget allows; latents, audio tokens
and kps features stay on the compute device between steps; only the conditional kps features are stored; no
per-frame Python loops in the hot path.

``compat="original"`` reproduces the original numerically: the per-window contributions are divided by the
frame's window count and accumulated in the run dtype, and latents are kept in the run dtype (SPEC §10 #11).
``compat="fixed"`` keeps the latents and the accumulation in float32 (identical in an fp32 run).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from .placement import ModulePlacement, Placement, module_device
from .timing import MAX_CONTEXT_FRAMES, Compat, FramePlan, frame_window_counts

logger = logging.getLogger("vexpress.pipeline")

# Conditioning features up to this size are kept on the compute device between steps, up to the second size in
# host memory; larger ones are recomputed per window (see VExpressPipeline).
DEVICE_CONDITION_BUDGET_BYTES = 512 << 20
HOST_CONDITION_BUDGET_BYTES = 2 << 30

# SD-1.5 VAE latent scale, hard-coded by the original (SPEC §3.7).
LATENT_SCALE = 0.18215

# The original's scheduler (inference_v2.yaml, SPEC §4.12); every other DDIMScheduler argument is its default.
DDIM_CONFIG: dict[str, Any] = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "steps_offset": 1,
    "prediction_type": "v_prediction",
    "rescale_betas_zero_snr": True,
    "timestep_spacing": "trailing",
}

ProgressFn = Callable[[int, int, "torch.Tensor | None"], None]
"""``progress(done, total, preview)``: ``done`` of ``total`` UNet calls of the whole sampling; ``preview`` is the
predicted clean latent ``[1, 4, T, h, w]`` after the last call of each step, None otherwise."""

CancelFn = Callable[[], Any]
"""Checked before every UNet call (and between kps / decode chunks). It stops the run by raising (its exception
propagates unchanged) or by returning a true value (then :class:`GenerationCancelled` is raised)."""

DumpFn = Callable[[str, np.ndarray], None]
"""``dump(name, array)`` receives the intermediate arrays under the parity names (``init_latents``,
``ref_latent``, ``audio_proj_output``, ``latents_step{i}``, ``latents_final``, ``video_float``,
``frames_uint8``)."""


KpsImageSource = Callable[[int, int], np.ndarray]
"""``source(start, stop)`` -> uint8 kps images ``[stop - start, H, W, 3]`` of those frames."""


class GenerationCancelled(Exception):
    """The cancel callback asked the pipeline to stop."""


@dataclass(frozen=True)
class SamplingSettings:
    """The sampling knobs of the original ``inference.py`` (its defaults)."""

    num_inference_steps: int = 25
    guidance_scale: float = 3.5
    reference_attention_weight: float = 0.95
    audio_attention_weight: float = 3.0
    seed: int = 42


@dataclass
class Hooks:
    """Optional callbacks; see :data:`ProgressFn`, :data:`CancelFn`, :data:`DumpFn`."""

    progress: ProgressFn | None = None
    cancel: CancelFn | None = None
    dump: DumpFn | None = None

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel():
            raise GenerationCancelled("generation cancelled")

    def emit(self, name: str, tensor: torch.Tensor) -> None:
        if self.dump is not None:
            self.dump(name, tensor.detach().to("cpu", torch.float32).numpy())


@dataclass
class ReferenceState:
    """What the reference pass produces: the scaled reference latent and the ReferenceNet bank."""

    latent: torch.Tensor  # [1, 4, h, w], run dtype
    bank: dict[str, torch.Tensor]  # module path -> [1, h*w, C]


@dataclass
class KpsFeatures:
    """Conditional V-Kps guider features ``[1, C0, T, h, w]`` (a broadcast view when every frame is the same).

    For clips too long to keep their features (``compute`` set), ``features`` holds only the first frame and each
    window's features are recomputed by the guider when the sampler asks for them.
    """

    features: torch.Tensor
    num_frames: int
    broadcast: bool = False
    compute: Callable[[range], torch.Tensor] | None = None

    @property
    def channels(self) -> int:
        return int(self.features.shape[1])

    def frames(self, window: range) -> torch.Tensor:
        """``[C0, F, h, w]`` for the frames of ``window``."""
        if self.compute is not None:
            return self.compute(window)
        if self.broadcast:
            return self.features[0, :, :1].expand(-1, len(window), -1, -1)
        return self.features[0, :, window.start : window.stop]


@dataclass
class _LoopState:
    """Per-sampling constants of the windowed loop (computed once, never per step)."""

    windows: tuple[range, ...]
    batches: list[list[range]]
    counts: torch.Tensor  # [1, 1, T, 1, 1] windows per frame, on the device
    cfg: bool


def _as_uint8_frames(images: np.ndarray | torch.Tensor, what: str) -> torch.Tensor:
    tensor = torch.as_tensor(images)
    if tensor.dtype != torch.uint8 or tensor.ndim not in (3, 4) or tensor.shape[-1] != 3:
        raise InputError(
            f"{what} must be uint8 RGB [H, W, 3] or [T, H, W, 3], got {tuple(tensor.shape)} {tensor.dtype}"
        )
    return tensor if tensor.ndim == 4 else tensor.unsqueeze(0)


def _all_frames_equal(frames: torch.Tensor, chunk: int = 16) -> bool:
    """Whether every frame equals the first; chunked with an early exit, so a long clip whose frames differ costs
    one comparison and never a full-size boolean copy."""
    first = frames[:1]
    for start in range(1, frames.shape[0], chunk):
        block = frames[start : start + chunk]
        if not torch.equal(block, first.expand_as(block)):
            return False
    return True


def reference_image_tensor(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 RGB ``[H, W, 3]`` -> float32 ``[1, 3, H, W]`` in [-1, 1], as diffusers' ``VaeImageProcessor`` does
    (``x / 255`` then ``2x - 1``, both in float32). A float tensor ``[1, 3, H, W]`` is passed through."""
    tensor = torch.as_tensor(image)
    if tensor.is_floating_point():
        if tensor.ndim != 4 or tensor.shape[:2] != (1, 3):
            raise InputError(f"a float reference image must be [1, 3, H, W] in [-1, 1], got {tuple(tensor.shape)}")
        return tensor.float()
    frames = _as_uint8_frames(tensor, "the reference image")
    if frames.shape[0] != 1:
        raise InputError(f"one reference image expected, got {frames.shape[0]}")
    return (frames.permute(0, 3, 1, 2).float() / 255.0) * 2.0 - 1.0


def frames_to_uint8(frames: torch.Tensor, compat: Compat) -> torch.Tensor:
    """Float frames in [0, 1] -> uint8. "original" truncates like ``(x * 255).astype(uint8)``; "fixed" rounds."""
    scaled = frames.float() * 255.0
    if compat != "original":
        scaled = scaled.round()
    return scaled.clamp_(0, 255).to(torch.uint8)


def balanced_batches(windows: Sequence[range], max_per_batch: int) -> list[list[range]]:
    """Split windows, in order, into the fewest batches of at most ``max_per_batch``, with sizes differing by at
    most one (so a compiled UNet sees at most two batch shapes)."""
    max_per_batch = max(1, int(max_per_batch))
    count = math.ceil(len(windows) / max_per_batch)
    base, extra = divmod(len(windows), count)
    batches, start = [], 0
    for index in range(count):
        size = base + (1 if index < extra else 0)
        batches.append(list(windows[start : start + size]))
        start += size
    return batches


def estimate_unet_bytes_per_image(latent_hw: int, base_channels: int, dtype: torch.dtype) -> int:
    """Rough peak activation bytes of one image (one frame of one CFG branch) in a denoising-UNet call.

    Dominated by the highest-resolution level (the GEGLU projection alone is ``hw x 8C``, with several ``hw x C``
    to ``hw x 4C`` tensors alive around it), so it scales with ``hw x C0``. The factor 48 covers the measured peaks
    of reduced-width models on CPU in fp32 (1.7 MB per image at C0 = 32, 16x16 latents; 10.4 MB at C0 = 64, 32x32)
    and gives ~6 GB for one 48-image window at 512² in fp16, above the ~3 GB the original's activations take
    (PERF.md §3.7) -- an overestimate errs towards fewer windows per call, never towards running out of memory.
    """
    element = torch.tensor([], dtype=dtype).element_size()
    return int(latent_hw * base_channels * element * 48)


class VExpressPipeline:
    """The V-Express generation pipeline over a loaded model set (``models.load_vexpress_models``).

    ``models`` needs the attributes ``vae``, ``reference_net``, ``denoising_unet``, ``kps_guider``,
    ``audio_projection`` and, for :meth:`encode_audio`, ``audio_encoder`` and ``audio_feature_extractor``;
    ``dtype`` (the run dtype) is taken from ``models.dtype`` or the UNet's parameters.

    Speed/memory knobs (none changes the result beyond float rounding):

    * ``fast_paths`` -- the UNet's once-per-video reference K/V and constant unconditional attentions.
    * ``window_batch_size`` -- windows per UNet call; None picks the largest that fits ``memory_budget_bytes``
      (default: half the device memory free once the UNet is loaded, on CUDA; 1 GiB on CPU, where batching gains
      little). A placement that reserves memory before loading can ask :meth:`stage_memory_bytes`.
    * ``offload`` -- each network leaves the device when its stage ends (see :class:`ModulePlacement`); kps
      features are then kept in host memory and moved per UNet call. ``placement`` replaces the default placement
      object altogether (the ComfyUI nodes pass theirs).
    * ``compile_unet`` -- ``torch.compile`` the UNet (off by default; falls back to eager if compiling fails).
    * ``kps_chunk_frames``, ``audio_chunk_frames``, ``decode_chunk_frames`` -- frames per guider / audio
      projection / VAE-decode call. ``decode_chunk_frames`` None: 8 on a GPU, 2 on a CPU (where bigger decode
      batches only add memory: measured 12-30 % slower at 8 than one frame per call on the CPU proxy).
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
        if compat not in ("fixed", "original"):
            raise ValueError(f"compat must be 'fixed' or 'original', got {compat!r}")
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
        self.window_batch_size = window_batch_size
        self.memory_budget_bytes = memory_budget_bytes
        self.compile_unet = compile_unet
        self.kps_chunk_frames = max(1, kps_chunk_frames)
        self.audio_chunk_frames = max(1, audio_chunk_frames)
        if decode_chunk_frames is None:
            decode_chunk_frames = 2 if self.device.type == "cpu" else 8
        self.decode_chunk_frames = max(1, decode_chunk_frames)
        self._compiled_unet: Callable[..., torch.Tensor] | None = None
        # torch.distributed group over which the windows of each step are split (None: this process does all).
        self.process_group = process_group
        # Kps features larger than this stay in host memory and travel per UNet call, so that device memory does
        # not grow with the audio length (at 512x512 they take 2.6 MB per frame in fp16; 60 s would be 4.7 GB).
        self.condition_device_budget_bytes = 0 if offload else DEVICE_CONDITION_BUDGET_BYTES
        # Past this size even host memory would grow with the audio length, so kps features drawn on demand are
        # recomputed per window instead of stored: the guider costs ~1 % of a UNet frame, nothing worth 2.6 MB/frame.
        self.host_condition_budget_bytes = HOST_CONDITION_BUDGET_BYTES
        # Activation bytes of the stage being entered, by stage name (stage_memory_bytes).
        self._activation_bytes: dict[str, int] = {}
        # Counters for tests and benchmarks.
        self.stats: dict[str, int] = {"unet_calls": 0, "unet_images": 0, "reference_net_calls": 0,
                                      "kps_guider_calls": 0, "vae_decode_calls": 0}

    def _run_guider(self, kps_images: torch.Tensor) -> torch.Tensor:
        """Guider features ``[1, C0, n, h, w]`` of uint8 kps images ``[n, H, W, 3]``."""
        # float32 first, then the run dtype, as the original's VaeImageProcessor(do_normalize=False) + .to(dtype) does.
        pixels = (kps_images.permute(3, 0, 1, 2).unsqueeze(0).float() / 255.0).to(self.device, self.dtype)
        self.stats["kps_guider_calls"] += 1
        return self.models.kps_guider(pixels)

    def _condition_device(self, num_bytes: int) -> torch.device:
        """Where conditioning features of ``num_bytes`` live between steps (see ``condition_device_budget_bytes``)."""
        return self.device if num_bytes <= self.condition_device_budget_bytes else torch.device("cpu")

    # ------------------------------------------------------------------------------------------------ stages

    @contextlib.contextmanager
    def _stage(self, name: str, roles: Sequence[str], activation_bytes: int = 0) -> Iterator[None]:
        modules: dict[str, nn.Module] = {}
        for role in roles:
            module = getattr(self.models, role, None)
            if module is None:
                raise InputError(f"the loaded model set has no {role}, which the {name} stage needs")
            modules[role] = module
        # Recorded before enter_stage, so that a placement which reserves room while loading the stage's networks
        # can ask for it (stage_memory_bytes).
        self._activation_bytes[name] = int(activation_bytes)
        self.placement.enter_stage(name, modules)
        try:
            yield
        finally:
            # Also after an error or a cancel: in offload mode the stage's networks leave the device either way.
            exit_stage = getattr(self.placement, "exit_stage", None)
            if exit_stage is not None:
                exit_stage(name, modules)

    def finish(self) -> None:
        """End of a generation: lets the placement release what it still holds (see ``Placement.finish``)."""
        self.placement.finish()

    def stage_memory_bytes(self, stage: str) -> int:
        """Device memory the stage being entered needs for its activations, on top of its networks' weights.

        For a placement that makes room before it loads a stage's networks (the ComfyUI nodes pass this method as
        ``memory_required`` to ``load_models_gpu``). It is known when the pipeline calls ``placement.enter_stage``:
        for ``denoise``, one UNet call on one context window, both CFG halves (the rough upper bound of
        :func:`estimate_unet_bytes_per_image`); more windows per call are only batched if the memory measured after
        loading holds them. 0 for the other stages, whose activations are small next to the UNet's.
        """
        return self._activation_bytes.get(stage, 0)

    def _window_bytes(self, frames_per_window: int, cfg: bool, latent_hw: int, channels: int) -> int:
        """Activation bytes of one UNet call on one window (both CFG halves when ``cfg``)."""
        per_image = estimate_unet_bytes_per_image(latent_hw, channels, self.dtype)
        return per_image * frames_per_window * (2 if cfg else 1)

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
        if callable(kps_images):
            if num_frames is None:
                raise InputError("num_frames is needed when kps images come from a callable")
            source = kps_images
            total = count = int(num_frames)

            def read(start: int, stop: int) -> torch.Tensor:
                return _as_uint8_frames(source(start, stop), "kps images")

        else:
            frames = _as_uint8_frames(kps_images, "kps images")
            total = int(num_frames) if num_frames is not None else int(frames.shape[0])
            if frames.shape[0] not in (1, total):
                raise InputError(f"{frames.shape[0]} kps images for {total} frames")
            if frames.shape[0] > 1 and _all_frames_equal(frames):
                frames = frames[:1]
            count = int(frames.shape[0])

            def read(start: int, stop: int) -> torch.Tensor:
                return frames[start:stop]

        broadcast = count == 1 and total != 1
        with self._stage("kps", ("kps_guider",)):
            features: torch.Tensor | None = None
            for start in range(0, count, self.kps_chunk_frames):
                hooks.check_cancel()
                out = self._run_guider(read(start, min(count, start + self.kps_chunk_frames)))
                if features is None:
                    shape = (1, out.shape[1], count, out.shape[3], out.shape[4])
                    num_bytes = math.prod(shape) * out.element_size()
                    if callable(kps_images) and num_bytes > self.host_condition_budget_bytes:
                        def compute(window: range) -> torch.Tensor:
                            return self._run_guider(read(window.start, window.stop))[0]

                        return KpsFeatures(out[:, :, :1], total, compute=compute)
                    store = self._condition_device(num_bytes)
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
        from ..conditioning import audio_features

        hooks = hooks or Hooks()
        hooks.check_cancel()
        kwargs: dict[str, Any] = {}
        if chunk_seconds is not None:
            kwargs["chunk_seconds"] = chunk_seconds
        with self._stage("audio", ("audio_encoder",)):
            return audio_features.wav2vec2_features(
                self.models.audio_encoder, self.models.audio_feature_extractor, waveform_16k, **kwargs
            )

    @torch.inference_mode()
    def audio_tokens(
        self,
        features: np.ndarray | torch.Tensor,
        num_frames: int,
        hooks: Hooks | None = None,
        *,
        num_pad: int | None = None,
    ) -> torch.Tensor:
        """Audio tokens ``[T, n, D]`` (run dtype, on the device) for ``num_frames`` video frames from the wav2vec2
        features ``[N, D]`` of the whole clip (:meth:`audio_features`, on any device): per-frame windows
        (``conditioning.audio_features.audio_windows``, ``num_pad`` from the model's constants unless given), then
        the audio projection (:meth:`project_audio`)."""
        from ..conditioning import audio_features

        if num_pad is None:
            constants = getattr(self.models, "constants", None)
            num_pad = int(getattr(constants, "num_pad_audio_frames", 2))
        windows = audio_features.audio_windows(features, num_frames, num_pad=num_pad)
        return self.project_audio(windows, hooks)

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
        self,
        waveform_16k: np.ndarray | torch.Tensor,
        num_frames: int,
        *,
        num_pad: int | None = None,
        chunk_seconds: float | None = None,
        hooks: Hooks | None = None,
    ) -> torch.Tensor:
        """Audio tokens ``[T, n, D]`` from a mono 16 kHz waveform: :meth:`audio_features` then
        :meth:`audio_tokens` (wav2vec2 features -> per-frame windows -> audio projection)."""
        features = self.audio_features(waveform_16k, hooks, chunk_seconds=chunk_seconds)
        return self.audio_tokens(features, num_frames, hooks, num_pad=num_pad)

    # ---------------------------------------------------------------------------------------------- sampling

    def initial_noise(self, num_frames: int, latent_hw: tuple[int, int], seed: int) -> torch.Tensor:
        """The original's initial latents: the first draw of a freshly seeded CPU generator, in the run dtype.

        On CPU torch draws different numbers per dtype, so fp16 noise is not rounded fp32 noise; drawing in the run
        dtype on CPU is what makes a seed mean the same video as in the original. ``init_noise_sigma`` is 1.0.
        """
        generator = torch.Generator(device="cpu").manual_seed(int(seed))
        shape = (1, 4, num_frames, latent_hw[0], latent_hw[1])
        return torch.randn(shape, generator=generator, dtype=self.dtype, device="cpu")

    def _unet_callable(self) -> Callable[..., torch.Tensor]:
        unet = self.models.denoising_unet
        if not self.compile_unet:
            return unet
        if self._compiled_unet is None:
            self._compiled_unet = torch.compile(unet, dynamic=False)
        return self._compiled_unet

    def _call_unet(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        call = self._unet_callable()
        if call is self.models.denoising_unet:
            return call(*args, **kwargs)
        try:
            return call(*args, **kwargs)
        except Exception as error:
            dynamo_errors: tuple[type[BaseException], ...] = ()
            with contextlib.suppress(Exception):
                from torch._dynamo import exc as dynamo_exc

                dynamo_errors = (dynamo_exc.TorchDynamoException,)
            if not dynamo_errors or not isinstance(error, dynamo_errors):
                raise
            logger.warning("torch.compile of the UNet failed (%s); continuing without compiling", error)
            self.compile_unet = False
            self._compiled_unet = None
            return self.models.denoising_unet(*args, **kwargs)

    def _memory_budget(self) -> int:
        """Bytes the windows of one UNet call may take: ``memory_budget_bytes``, else half the device memory free
        now (CUDA; called with the UNet loaded), else 1 GiB (CPU, where batching gains little)."""
        if self.memory_budget_bytes is not None:
            return int(self.memory_budget_bytes)
        if self.device.type == "cuda" and torch.cuda.is_available():
            free, _ = torch.cuda.mem_get_info(self.device)
            return free // 2
        return 1 << 30

    def _local_windows(self, windows: Sequence[range]) -> tuple[range, ...]:
        """The windows this process evaluates: all of them, or its share under a process group."""
        if self.process_group is None:
            return tuple(windows)
        import torch.distributed as dist

        from .sharding import shard_windows

        group = self.process_group
        return shard_windows(windows, dist.get_rank(group), dist.get_world_size(group))

    def _window_batch_size(self, frames_per_window: int, cfg: bool, latent_hw: int, channels: int) -> int:
        if self.window_batch_size is not None:
            return max(1, int(self.window_batch_size))
        per_window = self._window_bytes(frames_per_window, cfg, latent_hw, channels)
        return max(1, int(self._memory_budget() // max(1, per_window)))

    @torch.inference_mode()
    def sample(
        self,
        reference: ReferenceState,
        kps: KpsFeatures,
        audio_tokens: torch.Tensor,
        windows: Sequence[range] | FramePlan,
        settings: SamplingSettings | None = None,
        hooks: Hooks | None = None,
        *,
        init_latents: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The windowed CFG DDIM loop; returns the final latents ``[1, 4, T, h, w]`` on the device.

        ``windows`` come from :func:`~vexpress_model.pipeline.timing.plan_frames` (a ``FramePlan`` is accepted).
        ``init_latents`` replaces the seeded noise (tests).
        """
        settings = settings or SamplingSettings()
        hooks = hooks or Hooks()
        if isinstance(windows, FramePlan):
            windows = windows.windows
        windows = tuple(windows)
        num_frames = kps.num_frames
        if audio_tokens.shape[0] != num_frames:
            raise InputError(f"{audio_tokens.shape[0]} audio frames for {num_frames} kps frames")
        if not windows or sorted({f for w in windows for f in w}) != list(range(num_frames)):
            raise InputError(f"the context windows must cover frames 0..{num_frames - 1}")
        frames_per_window = len(windows[0])
        if any(len(w) != frames_per_window or w.step != 1 for w in windows) or frames_per_window > MAX_CONTEXT_FRAMES:
            raise InputError(f"context windows must be contiguous, of one length, at most {MAX_CONTEXT_FRAMES} frames")
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

        if init_latents is None:
            init_latents = self.initial_noise(num_frames, (h, w), settings.seed)
        latents = init_latents * scheduler.init_noise_sigma
        hooks.emit("init_latents", latents)
        # fixed: a float32 master copy of the latents (the UNet sees the run dtype); original: the run dtype
        # throughout, like the original's fp16 latents.
        loop_dtype = self.dtype if self.compat == "original" else torch.float32
        latents = latents.to(self.device, loop_dtype)

        counts = torch.tensor(frame_window_counts(num_frames, windows), device=self.device)
        audio_tokens = audio_tokens.to(self.device, self.dtype)
        window_bytes = self._window_bytes(frames_per_window, cfg, h * w, kps.channels)
        # Recomputed kps features need the guider beside the UNet.
        roles = ("denoising_unet",) if kps.compute is None else ("denoising_unet", "kps_guider")
        with self._stage("denoise", roles, activation_bytes=window_bytes):
            # Sized once the UNet is in place, so that free device memory is measured with its weights loaded.
            per_batch = self._window_batch_size(frames_per_window, cfg, h * w, kps.channels)
            state = _LoopState(
                windows=windows,
                batches=balanced_batches(local, per_batch) if (local := self._local_windows(windows)) else [],
                counts=counts.view(1, 1, num_frames, 1, 1),
                cfg=cfg,
            )
            logger.info(
                "sampling %d frames: %d windows of %d frames in %d UNet calls per step, %d steps, CFG %s",
                num_frames, len(windows), frames_per_window, len(state.batches), settings.num_inference_steps,
                "on" if cfg else "off",
            )
            unet = self.models.denoising_unet
            previous_fast = getattr(unet, "fast_paths", None)
            if previous_fast is not None:
                unet.fast_paths = self.fast_paths
            try:
                context = unet.prepare_reference(
                    {key: value.to(self.device, self.dtype) for key, value in reference.bank.items()}
                )
                latents = self._denoise(latents, scheduler, state, context, kps, audio_tokens, settings, hooks)
            finally:
                if previous_fast is not None:
                    unet.fast_paths = previous_fast
        hooks.emit("latents_final", latents)
        return latents

    def _denoise(
        self,
        latents: torch.Tensor,
        scheduler: Any,
        state: _LoopState,
        context: Any,
        kps: KpsFeatures,
        audio_tokens: torch.Tensor,
        settings: SamplingSettings,
        hooks: Hooks,
    ) -> torch.Tensor:
        original = self.compat == "original"
        acc_dtype = self.dtype if original else torch.float32
        timesteps = scheduler.timesteps
        total = len(timesteps) * len(state.batches)
        done = 0
        for step_index, t in enumerate(timesteps):
            accumulated = torch.zeros_like(latents, dtype=acc_dtype)
            for batch_index, batch in enumerate(state.batches):
                hooks.check_cancel()
                guided = self._guided_prediction(latents, batch, t, context, kps, audio_tokens, settings, state.cfg)
                for item, window in enumerate(batch):
                    contribution = guided[item : item + 1]
                    if original:
                        # As the original: each window's prediction divided by its frames' window counts, then
                        # summed in window order, in the run dtype.
                        contribution = contribution / state.counts[:, :, window.start : window.stop]
                    accumulated[:, :, window.start : window.stop] += contribution.to(acc_dtype)
                done += 1
                if hooks.progress is not None and batch_index < len(state.batches) - 1:
                    hooks.progress(done, total, None)
            if self.process_group is not None:
                import torch.distributed as dist

                dist.all_reduce(accumulated, group=self.process_group)
            if not original:
                accumulated = accumulated / state.counts
            output = scheduler.step(accumulated, t, latents)
            latents = output.prev_sample.to(latents.dtype)
            hooks.emit(f"latents_step{step_index}", latents)
            if hooks.progress is not None:
                hooks.progress(done, total, output.pred_original_sample)
        return latents

    def _guided_prediction(
        self,
        latents: torch.Tensor,
        batch: list[range],
        t: torch.Tensor,
        context: Any,
        kps: KpsFeatures,
        audio_tokens: torch.Tensor,
        settings: SamplingSettings,
        cfg: bool,
    ) -> torch.Tensor:
        """CFG-combined v-prediction ``[k, 4, F, h, w]`` for the k windows of ``batch`` (one UNet call)."""
        sample = torch.stack([latents[0, :, w.start : w.stop] for w in batch]).to(self.dtype)
        audio = torch.stack([audio_tokens[w.start : w.stop] for w in batch])
        # Window slices of host features (offload mode) are views of pinned memory: copy those, then stack them on
        # the device.
        kps_batch = torch.stack([kps.frames(w).to(self.device, self.dtype, non_blocking=True) for w in batch])
        k = len(batch)
        if cfg:
            # Unconditional half first, like the original's [uncond, cond] CFG batch: zero kps features, zero audio
            # tokens and (flagged by ``uncond``) a zero reference bank -- all three conditions dropped (SPEC §4.13).
            sample = torch.cat([sample, sample])
            audio = torch.cat([torch.zeros_like(audio), audio])
            kps_batch = torch.cat([torch.zeros_like(kps_batch), kps_batch])
            uncond = torch.arange(2 * k) < k
        else:
            uncond = torch.zeros(k, dtype=torch.bool)
        # ``uncond`` stays on the CPU: the UNet reads it on the host, which must not cost a device sync.
        prediction = self._call_unet(
            sample,
            t,
            audio,
            kps_batch,
            context,
            reference_attention_weight=settings.reference_attention_weight,
            audio_attention_weight=settings.audio_attention_weight,
            uncond=uncond,
        )
        self.stats["unet_calls"] += 1
        self.stats["unet_images"] += int(prediction.shape[0] * prediction.shape[2])
        if not cfg:
            return prediction if self.compat == "original" else prediction.float()
        if self.compat != "original":
            prediction = prediction.float()
        uncond_v, cond_v = prediction[:k], prediction[k:]
        return uncond_v + settings.guidance_scale * (cond_v - uncond_v)

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
        for the ``video_float`` / ``frames_uint8`` dumps."""
        return self._decode(latents, output, hooks or Hooks())

    def _decode(self, latents: torch.Tensor, output: str, hooks: Hooks) -> Iterator[np.ndarray]:
        if output not in ("uint8", "float"):
            raise ValueError(f"output must be 'uint8' or 'float', got {output!r}")
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
        audio: torch.Tensor | np.ndarray,
        plan: FramePlan,
        settings: SamplingSettings | None = None,
        hooks: Hooks | None = None,
        *,
        audio_is_tokens: bool = False,
        output: Literal["uint8", "float"] = "uint8",
    ) -> Iterator[np.ndarray]:
        """All stages; returns the iterator of decoded frame chunks once sampling is done.

        ``audio``: a mono 16 kHz waveform ``[N]`` (wav2vec2 runs here), per-frame windows ``[T, 10, D_w]``
        (``conditioning.audio_features.audio_windows``), or projected tokens ``[T, n, D]`` with
        ``audio_is_tokens=True``. ``kps_images``: see :meth:`encode_kps`. Call :meth:`finish` after consuming the
        iterator (offload mode).
        """
        hooks = hooks or Hooks()
        reference = self.encode_reference(reference_image, hooks)
        kps = self.encode_kps(kps_images, plan.num_frames, hooks)
        if audio_is_tokens:
            tokens = torch.as_tensor(audio)
        elif np.ndim(audio) == 1:
            tokens = self.encode_audio(audio, plan.num_frames, hooks=hooks)
        else:
            tokens = self.project_audio(audio, hooks)
        latents = self.sample(reference, kps, tokens, plan.windows, settings, hooks)
        return self.decode(latents, output=output, hooks=hooks)
