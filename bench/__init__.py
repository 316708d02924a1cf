"""Benchmark kit for relex: synthetic runs, the read floor, the naive baseline and run_bench."""
