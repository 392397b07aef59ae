"""The measurement core: what to measure (``cases``: the exported files and their test split), how queries
reach a system under test (``scenarios``), the one place that times them (``core.measure``), and the loop of
``fmnist-bench run`` over every case (``run.run``, the entry point). Both front doors, ``fmnist-bench run``
and ``pytest bench``, measure through ``core.measure`` with the settings of ``bench/settings.py``.
"""
