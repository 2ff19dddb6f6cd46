"""The tasks the benchmarks send."""
