"""The policies autotune rebuilds, one package each: ``config`` (torch-free) apart from ``model``."""
