"""Benchmarks of the library's memory and speed claims, run as ``mode bench ...``.

The modules are imported on use (``from mode.bench.memory import run_memory_benchmark``) so that the
command line does not load matplotlib or the peer packages ``momentumnet`` and ``memcnn`` before it
needs them.
"""
