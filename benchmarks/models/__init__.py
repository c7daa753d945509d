"""Models the benchmark suite measures, built from code with fixed seeds (nothing is downloaded)."""
