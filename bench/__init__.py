"""Benchmarks: scripts that print tables (see README, Benchmarks). Not tests; no timing asserts."""
