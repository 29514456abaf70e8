"""Benchmarks (not part of the test suite). See README "Benchmarks"."""
