"""The lab: what measures and attacks the product, never the product: the benchmarks (bench) and the nemesis (chaos)."""
