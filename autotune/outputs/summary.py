"""What a person reads on stdout: a profile as a table, the model description, the command."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autotune.units import format_bytes

if TYPE_CHECKING:
    from autotune.outputs.profile import Profile


def _rows(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


def print_profile(p: Profile) -> None:
    """The profile as ``autotune run`` and ``autotune show`` print it: the table, the notes, the
    command."""
    print("\n".join(profile_lines(p)))


def profile_lines(p: Profile) -> list[str]:
    """What :func:`print_profile` prints, line by line."""
    rows = _answer_rows(p)
    rows[4:4] = _scale_rows(p)
    rows += _more_rows(p)
    return [
        f"autotune profile for {p.policy}",
        *_rows(rows).splitlines(),
        *_footer(p),
        p.lerobot_train_command,
    ]


def _answer_rows(p: Profile) -> list[tuple[str, str]]:
    """The machine, the trainer, the conditions, the batch and the worker setting."""
    fpr, cond = p.fingerprint, p.conditions
    machine = fpr.get("gpu_name") or f"CPU ({fpr.get('cpu_model', '')}, {fpr.get('cpu_cores')} cores)"
    h, w = cond.image_size
    budget = cond.memory_limit_bytes
    certified = (
        f"certified: {p.max_batch_size} fits, {p.max_batch_size + 1} runs out of memory"
        if p.certified
        else "not certified: the search hit its upper bound"
    )
    prefetch = f", prefetch_factor {p.prefetch_factor}" if p.prefetch_factor else ""
    return [
        ("machine", f"{machine} [{cond.device}], torch {fpr.get('torch_version')}"),
        ("trainer", _trainer(p)),
        ("measured by", _backend(p.backend)),
        (
            "conditions",
            f"{p.precision}, gradient checkpointing {'on' if p.grad_checkpointing else 'off'}, "
            f"{cond.cameras} camera(s) {h}x{w}, budget {format_bytes(budget)}",
        ),
        ("max batch size", f"{p.max_batch_size} ({certified}; {p.search.get('probes', '?')} probes)"),
        (
            "batch size",
            f"{p.batch_size} (peak {format_bytes(p.peak_reserved_bytes)}, "
            f"{100 * p.peak_reserved_bytes / budget:.0f}% of the budget; headroom {cond.headroom:.0%}"
            + (", soaked" if p.soaks else "")
            + ")",
        ),
        ("num_workers", f"{p.num_workers}{prefetch}"),
        *_decoder_rows(p),
        ("data_s / updt_s", f"{p.data_s:.4f} s / {p.updt_s:.4f} s per step"),
        ("samples/s", f"{p.samples_per_s:.2f}"),
    ]


def _decoder_rows(p: Profile) -> list[tuple[str, str]]:
    """The video decoder measured (profiles from before it was recorded have none)."""
    if not p.video_backend:
        return []
    whose = (
        "the trainer's own choice"
        if p.video_backend == p.video_backend_default
        else f"asked for: the trainer would pick {p.video_backend_default}"
    )
    costs = ", ".join(f"{name} {s * 1000:.1f} ms" for name, s in p.decode_s_by_backend.items())
    text = f"{p.video_backend} ({whose})" + (f"; a sample reads in {costs}" if costs else "")
    d = next((d for d in p.decisions if d.get("what") == "decoder"), None)
    if d is not None and d.get("challenger") and d.get("ratio") and d.get("spread") is not None:
        runs = d.get("pairs", 0)
        text += (
            f"; {d['challenger']} measured {d['ratio']:.2f}x ± {d['spread']:.2f} "
            f"({f'{runs} paired runs' if runs else 'single trials'}): {d['verdict']}"
        )
    return [("video decoder", text)]


def _scale_rows(p: Profile) -> list[tuple[str, str]]:
    """Gradient accumulation and DDP: the effective batch (after the conditions)."""
    rows = []
    if p.grad_accum_steps > 1:
        rows.append(
            (
                "accumulation",
                f"{p.grad_accum_steps} steps: effective batch {p.batch_size * p.grad_accum_steps}",
            )
        )
    if p.gpus > 1:
        rows.append(
            (
                "gpus",
                f"{p.gpus} (DDP): batch {p.batch_size} per GPU, effective batch "
                f"{p.effective_batch_size or p.batch_size * p.gpus}; LeRobot does not rescale "
                "the learning rate for it",
            )
        )
    return rows


def _more_rows(p: Profile) -> list[tuple[str, str]]:
    """LeRobot's default setting, the variants compared, the answer beside, the memory model, the
    plots and the run."""
    rows = []
    default = p.lerobot_default
    if default:
        rows.append(
            (
                "LeRobot defaults",
                f"{default.num_workers} workers, prefetch {default.prefetch_factor}: "
                f"{default.samples_per_s:.2f} samples/s; {_against_default(p)}",
            )
        )
    for c in p.comparisons if p.conditions.compare else []:
        rows.append(
            (
                "compared",
                f"{c.precision}, checkpointing {'on' if c.grad_checkpointing else 'off'}: max batch "
                f"{c.max_batch_size}, batch {c.batch_size}, {c.samples_per_s:.2f} samples/s",
            )
        )
    if p.beside:
        rows.append(("beside", _beside(p.beside)))
    model = p.memory_model
    if model:
        rows.append(
            (
                "memory model",
                f"{format_bytes(model['fixed_bytes'])} + {format_bytes(model['per_sample_bytes'])} per sample",
            )
        )
    if p.plots:
        rows.append(("plots", ", ".join(p.plots.values())))
    rows.append(("profile run", f"{p.run_id} at {p.created_at}"))
    return rows


def _footer(p: Profile) -> list[str]:
    """The notes, what would help an input-bound run, the verification and the command's caveats."""
    caveats = p.lerobot_train_caveats
    lines = [f"  note: {note}" for note in p.notes if note not in caveats]
    for remedy in p.input_bound["remedies"] if p.input_bound else []:
        figures = (
            f": {remedy['samples_per_s']:.1f} samples/s (data_s {remedy['data_s']:.3f} s, "
            f"updt_s {remedy['updt_s']:.3f} s)"
            if remedy.get("samples_per_s")
            else ""
        )
        kind = "measured" if remedy["measured"] else "estimated"
        lines.append(f"  would help ({kind}): {remedy['what']}{figures}; {remedy['detail']}")
    if p.verification:
        lines.append(f"  verified: {p.verification['verdict']}")
    lines += [f"  warning: the command below will not reproduce this: {caveat}" for caveat in caveats]
    return lines


def _against_default(p: Profile) -> str:
    """The tuned setting against LeRobot's default, with its spread and paired runs, or why the
    default is recommended (no measurable difference)."""
    d = next((d for d in p.decisions if d.get("what") == "workers"), None)
    speedup = p.speedup_vs_default
    if d is None:  # a profile from before the comparisons were weighed against the noise
        return f"tuned is {speedup:.2f}x" if speedup is not None else "not compared"
    if not d.get("challenger"):
        return "the fastest measured, so it is recommended"
    figures = f"{d['ratio']:.2f}x ± {d['spread']:.2f}" if d.get("ratio") and d.get("spread") else "?"
    runs = d.get("pairs", 0)
    measured = (
        f"{figures} ({runs} paired run{'s' if runs != 1 else ''})" if runs else f"{figures} (single trials)"
    )
    if d["chosen"] != d["default"]:
        return f"tuned ({d['chosen']}) is {measured}"
    return f"recommended, as the study's fastest ({d['challenger']}) is {measured}: {d['verdict']}"


def _backend(backend: str) -> str:
    if backend == "rebuilt":
        return "autotune's rebuild of the policy (exact to the parameter), on synthetic tensors"
    return f"{backend}'s own code: its policy, pre-processor, optimizer and update step, on the dataset"


def _trainer(p: Profile) -> str:
    version = p.lerobot_version
    if not version:
        return "lerobot-train (version not recorded)"
    how = {
        "PATH": "found on PATH",
        "path": "given with --lerobot",
        "flag": "given with --lerobot-version",
        "assumed": "none found here: the newest release",
        "imported": "installed beside autotune",
    }.get(p.lerobot_source, "")
    answer = f"for your lerobot-train {version}" + (f" ({how})" if how else "")
    return f"{answer}: batch {p.batch_size}, {p.samples_per_s:.2f} samples/s"


def _beside(b: dict[str, Any]) -> str:
    what = f"with {b['precision']} + gradient checkpointing"
    if not b.get("batch_size"):
        return f"{what}: {b.get('why_no_command') or 'nothing fits'}"
    text = (
        f"{what}: max batch {b['max_batch_size']}, batch {b['batch_size']}, "
        f"{b['samples_per_s']:.2f} samples/s (training step only)"
    )
    if b.get("lerobot_train_command"):
        return f"{text}; in LeRobot {b['lerobot_version']}: {b['lerobot_train_command']}"
    return f"{text}; {b.get('why_no_command', '')}"


def print_description(policy: str, info: dict[str, Any]) -> None:
    scalars = [(k, v) for k, v in info.items() if not isinstance(v, (dict, list))]
    print(f"{policy} model")
    print(
        _rows(
            [(k, f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)) for k, v in scalars]
        )
    )
    for key, value in info.items():
        if isinstance(value, dict):
            print(f"{key}:")
            print(
                _rows(
                    [
                        (k, f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v))
                        for k, v in value.items()
                    ]
                )
            )
        elif isinstance(value, list):
            print(f"  {key}: {value}")
