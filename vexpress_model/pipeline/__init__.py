"""pipeline layer of the V-Express library (see docs/ARCHITECTURE.md).

``timing``         frame counts, output fps and context windows (``plan_frames``, ``context_windows``)
``placement``      which networks sit on the compute device during each stage (``ModulePlacement``, offload)
``sampler``        ``VExpressPipeline``: reference pass, kps features, audio tokens, windowed CFG DDIM, chunked
                   decode; ``SamplingSettings``, ``Hooks`` (progress, cancel, dump)
``reference_loop`` the original's per-window loop restated literally: the yardstick for tests and benchmarks only
``distributed``    a torchrun launch: process group, device per process, phases agreed by all ranks
``sharding``       which windows and decode chunks each process of a distributed run takes
``gather``         the distributed decode, gathered to rank 0 in frame order in chunks
"""
