"""Benchmarks: speed and memory of the kernels, and the long-range memory suite."""
