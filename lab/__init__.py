"""The lab: fault injection over real processes (chaos) and, later, the benchmarks."""
