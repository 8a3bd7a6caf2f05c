"""pipeline layer of the V-Express library (see docs/ARCHITECTURE.md).

``timing``           frame counts, output fps and context windows (``plan_frames``, ``context_windows``)
``hooks``            ``SamplingSettings`` and ``Hooks`` (progress, cancel, dump)
``device_placement`` the ``Placement`` contract and ``ModulePlacement`` (which networks sit on the device per stage)
``memory_policy``    memory budgets, windows per UNet call, keep/recompute of kps features
``kps_features``     ``KpsFeatures`` (the guider's output as the sampler reads it per window)
``images``           uint8 frame checks, reference image to [-1, 1], decoded floats to uint8
``denoise``          the windowed CFG DDIM loop: ``UNetLike``, ``WindowAccumulator``, ``WindowDenoiser``
``sampler``          ``VExpressPipeline``: the stages (reference, kps, audio, sample, decode) in order
``reference_loop``   see ``vexpress_model.testing`` (the original's loop restated: tests and benchmarks only)
``distributed``      a torchrun launch: process group, device per process, phases agreed by all ranks
``sharding``         which windows and decode chunks each process of a distributed run takes
``gather``           the distributed decode, gathered to rank 0 in frame order in chunks
"""
