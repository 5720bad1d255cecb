"""The trainer the answer is for: which ``lerobot-train`` and what each release can run
(:mod:`~autotune.trainer.versions`), the command for it (:mod:`~autotune.trainer.command`), and
``autotune verify`` (:mod:`~autotune.trainer.verify`, run through :mod:`~autotune.trainer.shim`)."""
