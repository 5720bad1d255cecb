"""The stages of ``autotune run``, in order; each takes the run's context and returns a typed result."""
