"""This machine as the tuner sees it: the device and precision a run uses, the fingerprint that makes a
profile stale, and the host's memory and cores. The tuner reads the GPU through NVML only."""
