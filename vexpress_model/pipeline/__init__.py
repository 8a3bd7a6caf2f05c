"""pipeline layer of the V-Express library (see docs/ARCHITECTURE.md).

``hooks``        ``SamplingSettings`` and ``Hooks`` (progress, cancel, dump)
``windows``      context windows, every idea of them: plan and frame timing (``plan_frames``), counts per frame,
                 the share of each process, batches per UNet call, the batch inputs, the per-frame accumulator
``memory``       where the networks live per stage (``Placement``, ``ModulePlacement``) and ``MemoryPolicy``
``denoise``      the windowed CFG DDIM loop: ``UNetLike``, ``UNetRunner``, ``WindowDenoiser``
``sampler``      ``VExpressPipeline``: the stages (reference, kps, audio, sample, decode) in order
``distributed``  a torchrun launch: process group, device per process, phases agreed by all ranks, split decode
"""
