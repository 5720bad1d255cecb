"""``autotune run``: its configuration, opening the run, the probes it asks for, and its stages."""
