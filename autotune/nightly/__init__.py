"""Nightly: the check of an up-to-date profile, the regression alarm, ``runs.csv`` read back as the
history, and ``autotune schedule``."""
