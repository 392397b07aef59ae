"""The measurement core: what to measure (``cases``), the one place that times it (``core.measure``, which both
front doors, ``fmnist-bench run`` and ``pytest bench``, call with the settings of ``bench/settings.py``), MLPerf
LoadGen as the engine of its scenarios (``loadgen``), and the loop of ``fmnist-bench run`` (``run.run``).
"""
