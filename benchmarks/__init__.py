"""django-conversations benchmarks: ``make bench`` (``python benchmarks/run.py``); see the README."""
