"""`make bench`: performance as ratios measured in one run on this machine (see docs/benchmarks.md)."""
