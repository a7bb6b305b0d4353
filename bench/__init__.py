"""promptswap benchmarks and measurement scripts."""
