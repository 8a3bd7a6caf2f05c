"""Test and benchmark scaffolding, never imported by the library or the nodes.

``random_model``    random-weight model folders in the released layout (``write_random_model_folder``)
``reference_loop``  the original's per-window sampling loop restated literally: the yardstick for the sampler
``bench_models``    random-weight networks of the real topology at benchmark sizes, built in memory
``counting``        ``CallCounter``: how often each network ran (forward hooks)
"""
