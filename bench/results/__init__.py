"""Stored bench results: the record and its schema (``record``), where results files live and how they are
named, found and read (``store``, the entry point, as pytest-benchmark's storage), the noise-aware
comparison of two runs (``compare``) and the one-row-per-runtime summary (``summary``)."""
