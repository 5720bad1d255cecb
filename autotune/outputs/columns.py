"""The columns of every CSV file under ``results/``, in order (docs/reference.md lists them)."""

from __future__ import annotations

# Shared by every file: which run, and under what conditions.
RUN_KEY_COLUMNS = [
    "run_id",
    "timestamp",
    "policy",
    "device",
    "gpu_name",
    "precision",
    "grad_checkpointing",
    "cameras",
    "image_h",
    "image_w",
    "memory_limit_bytes",
]

BATCH_PROBE_COLUMNS = RUN_KEY_COLUMNS + [
    "phase",  # search, throughput, soak or check
    "repeat",  # earlier probes of this variant at this batch size in the run (0: the first)
    "batch_size",
    "status",  # ok, oom, error or timeout
    "peak_allocated_bytes",
    "peak_reserved_bytes",
    "alloc_retries",
    "step_time_s",
    "samples_per_s",
    "steps",
    "wall_s",
    "memory_cap_bytes",  # the allocator cap the probe ran under (CUDA: may be less than asked)
    "warmup_peak_reserved_bytes",  # the warm-up's own peak, apart from the measured one
    "warmup_steps",
    "message",
]

WORKER_TRIAL_COLUMNS = RUN_KEY_COLUMNS + [
    "trial",
    "repeat",  # 0: the study's trial; 1, 2, ...: the same setting measured again to decide
    "batch_size",
    "num_workers",
    "prefetch_factor",
    "video_backend",  # the decoder the workers read the videos with: torchcodec or pyav
    "is_lerobot_default",
    "status",
    "data_s",
    "updt_s",
    "samples_per_s",
    "data_fraction",
    "loader_rss_bytes",
    "decode_s_per_sample",
    "drained",
    "steps",
    "wall_s",
    "message",
]

RUN_COLUMNS = RUN_KEY_COLUMNS + [
    "status",  # ok, checked (an up-to-date profile checked again) or failed
    "dataset",
    "max_batch_size",
    "certified",
    "batch_size",
    "grad_accum_steps",
    "lowered_by_soak",
    "num_workers",
    "prefetch_factor",
    "data_s",
    "updt_s",
    "samples_per_s",
    "peak_reserved_bytes",
    "default_samples_per_s",
    "speedup_vs_default",
    "probes",
    "trials",
    "gpu_uuid",
    "driver_version",
    "cuda_driver_version",
    "torch_version",
    "cpu_model",
    "cpu_cores",
    "wall_s",
    "profile",
    "message",
    "lerobot_version",  # the lerobot-train the printed command is made for
]

VERIFY_COLUMNS = RUN_KEY_COLUMNS + [
    "profile_run_id",  # the profile that was verified
    "lerobot_version",
    "status",  # verified, differs or failed
    "batch_size",
    "steps",  # lerobot-train steps timed (the first is set apart)
    "learnable_params",  # as lerobot-train logged them
    "trainable_params",  # as autotune's probes counted them
    "promised_bytes",  # the budget less the headroom
    "peak_bytes",  # lerobot-train's peak: CPU resident-set growth, CUDA allocator reserve after step 1
    "warmup_peak_bytes",  # its peak up to the first optimizer step (cuDNN's algorithm search), apart
    "profile_peak_bytes",
    "workers_pss_bytes",  # lerobot-train's DataLoader workers
    "updt_s",
    "data_s",
    "samples_per_s",
    "profile_updt_s",
    "profile_data_s",
    "profile_samples_per_s",
    "wall_s",
    "message",
]

ALERT_COLUMNS = RUN_KEY_COLUMNS + [
    "kind",  # regression or improvement
    "metric",  # max_batch_size, samples_per_s, data_s or updt_s
    "before",  # the median of the last runs under the same conditions
    "after",
    "change",  # relative
    "noise",  # relative: the spread the change was judged against
    "changed",  # fingerprint fields that changed since the last run
    "message",
]

# autotune rl (autotune/rl/records.py): one row per PPO or RRD probe.
RL_PROBE_COLUMNS = RUN_KEY_COLUMNS + [
    "algo",  # ppo or rrd
    "phase",  # search, throughput or soak
    "searched",  # the size the probe varied: minibatch_size, batch_size or rrd_batch_size
    "status",
    "batch_size",  # PPO: rl_games's batch (num_envs x horizon_length); RRD: BATCH_SIZE
    "minibatch_size",
    "valid",  # the probed size is one the trainer accepts (PPO: it divides the batch)
    "num_envs",
    "horizon_length",
    "mini_epochs",
    "rrd_batch_size",
    "rrd_sample_size",
    "obs_shape",
    "obs_dtype",
    "act_dim",
    "hidden",
    "peak_allocated_bytes",
    "peak_reserved_bytes",
    "step_time_s",
    "updt_s",
    "samples_per_s",
    "steps",
    "wall_s",
    "memory_cap_bytes",
    "message",
]

# autotune train (autotune/trainer/train.py): one row per step lerobot-train logged, and one per event.
TRAIN_RUN_COLUMNS = RUN_KEY_COLUMNS + [
    "profile_run_id",  # the profile it trained with
    "lerobot_version",
    "attempt",  # 0: the first launch; 1, 2, 3: restarts after an out-of-memory
    "event",  # step, oom, restart, finished, failed, interrupted
    "step",  # the step lerobot-train logged (or reached, for an event)
    "batch_size",
    "grad_accum_steps",
    "data_s",  # lerobot-train's averages over its log window
    "prep_s",  # main only: preprocessing, apart from data_s
    "updt_s",
    "samples_per_s",  # batch / (data_s + prep_s + updt_s), as LeRobot works out its smp/s
    "profile_samples_per_s",  # what the training is held to (verified in the trainer, or the probes')
    "peak_bytes",  # mem_gb as logged (torch.cuda.max_memory_allocated; CUDA only), empty elsewhere
    "loss",
    "wall_s",  # since the attempt started (events)
    "message",
]

FILES: dict[str, list[str]] = {
    "batch_probes.csv": BATCH_PROBE_COLUMNS,
    "worker_trials.csv": WORKER_TRIAL_COLUMNS,
    "runs.csv": RUN_COLUMNS,
    "verify.csv": VERIFY_COLUMNS,
    "alerts.csv": ALERT_COLUMNS,
    "rl_probes.csv": RL_PROBE_COLUMNS,
    "train_runs.csv": TRAIN_RUN_COLUMNS,
}
