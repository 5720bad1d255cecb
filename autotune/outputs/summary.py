"""What a person reads on stdout: a profile as a table, the model description, the command."""

from __future__ import annotations

from typing import Any

from autotune.units import format_bytes


def _rows(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


def print_profile(p: dict[str, Any]) -> None:
    fpr, cond = p["fingerprint"], p["conditions"]
    machine = fpr.get("gpu_name") or f"CPU ({fpr.get('cpu_model', '')}, {fpr.get('cpu_cores')} cores)"
    h, w = cond["image_size"]
    search = p.get("search", {})
    budget = cond["memory_limit_bytes"]
    rows = [
        ("machine", f"{machine} [{cond['device']}], torch {fpr.get('torch_version')}"),
        ("trainer", _trainer(p)),
        ("measured by", _backend(p.get("backend", "rebuilt"))),
        (
            "conditions",
            f"{p['precision']}, gradient checkpointing {'on' if p['grad_checkpointing'] else 'off'}, "
            f"{cond['cameras']} camera(s) {h}x{w}, budget {format_bytes(budget)}",
        ),
        (
            "max batch size",
            f"{p['max_batch_size']} ("
            + (
                f"certified: {p['max_batch_size']} fits, {p['max_batch_size'] + 1} runs out of memory"
                if p.get("certified")
                else "not certified: the search hit its upper bound"
            )
            + f"; {search.get('probes', '?')} probes)",
        ),
        (
            "batch size",
            f"{p['batch_size']} (peak {format_bytes(p['peak_reserved_bytes'])}, "
            f"{100 * p['peak_reserved_bytes'] / budget:.0f}% of the budget; headroom {cond['headroom']:.0%}"
            + (", soaked" if p.get("soaks") else "")
            + ")",
        ),
        (
            "num_workers",
            f"{p['num_workers']}"
            + (f", prefetch_factor {p['prefetch_factor']}" if p.get("prefetch_factor") else ""),
        ),
        ("data_s / updt_s", f"{p['data_s']:.4f} s / {p['updt_s']:.4f} s per step"),
        ("samples/s", f"{p['samples_per_s']:.2f}"),
    ]
    default = p.get("lerobot_default")
    if default:
        rows.append(
            (
                "LeRobot defaults",
                f"{default['num_workers']} workers, prefetch {default['prefetch_factor']}: "
                f"{default['samples_per_s']:.2f} samples/s; {_against_default(p)}",
            )
        )
    gpus = p.get("gpus", 1)
    if gpus > 1:
        rows.insert(
            4,
            (
                "gpus",
                f"{gpus} (DDP): batch {p['batch_size']} per GPU, effective batch "
                f"{p.get('effective_batch_size') or p['batch_size'] * gpus}; LeRobot does not rescale "
                "the learning rate for it",
            ),
        )
    if p.get("grad_accum_steps", 1) > 1:
        rows.insert(
            4,
            (
                "accumulation",
                f"{p['grad_accum_steps']} steps: effective batch {p['batch_size'] * p['grad_accum_steps']}",
            ),
        )
    for c in p.get("comparisons", []) if cond.get("compare") else []:
        rows.append(
            (
                "compared",
                f"{c['precision']}, checkpointing {'on' if c['grad_checkpointing'] else 'off'}: max batch "
                f"{c['max_batch_size']}, batch {c['batch_size']}, {c['samples_per_s']:.2f} samples/s",
            )
        )
    beside = p.get("beside")
    if beside:
        rows.append(("beside", _beside(beside)))
    model = p.get("memory_model")
    if model:
        rows.append(
            (
                "memory model",
                f"{format_bytes(model['fixed_bytes'])} + {format_bytes(model['per_sample_bytes'])} per sample",
            )
        )
    if p.get("plots"):
        rows.append(("plots", ", ".join(p["plots"].values())))
    rows.append(("profile run", f"{p['run_id']} at {p['created_at']}"))
    print(f"autotune profile for {p['policy']}")
    print(_rows(rows))
    caveats = p.get("lerobot_train_caveats", [])
    for note in p.get("notes", []):
        if note not in caveats:
            print(f"  note: {note}")
    bound = p.get("input_bound")
    for remedy in bound["remedies"] if bound else []:
        figures = (
            f": {remedy['samples_per_s']:.1f} samples/s (data_s {remedy['data_s']:.3f} s, "
            f"updt_s {remedy['updt_s']:.3f} s)"
            if remedy.get("samples_per_s")
            else ""
        )
        kind = "measured" if remedy["measured"] else "estimated"
        print(f"  would help ({kind}): {remedy['what']}{figures}; {remedy['detail']}")
    verification = p.get("verification")
    if verification:
        print(f"  verified: {verification['verdict']}")
    for caveat in caveats:
        print(f"  warning: the command below will not reproduce this: {caveat}")
    print(p["lerobot_train_command"])


def _against_default(p: dict[str, Any]) -> str:
    """The tuned setting against LeRobot's default, with its spread and paired runs, or why the
    default is recommended (no measurable difference)."""
    d = next((d for d in p.get("decisions", []) if d.get("what") == "workers"), None)
    speedup = p.get("speedup_vs_default")
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
    return f"recommended: the study's fastest ({d['challenger']}) is {measured}, {d['verdict']}"


def _backend(backend: str) -> str:
    if backend == "rebuilt":
        return "autotune's rebuild of the policy (exact to the parameter), on synthetic tensors"
    return f"{backend}'s own code: its policy, pre-processor, optimizer and update step, on the dataset"


def _trainer(p: dict[str, Any]) -> str:
    version = p.get("lerobot_version")
    if not version:
        return "lerobot-train (version not recorded)"
    how = {
        "PATH": "found on PATH",
        "path": "given with --lerobot",
        "flag": "given with --lerobot-version",
        "assumed": "none found here: the newest release",
        "imported": "installed beside autotune",
    }.get(p.get("lerobot_source", ""), "")
    answer = f"for your lerobot-train {version}" + (f" ({how})" if how else "")
    return f"{answer}: batch {p['batch_size']}, {p['samples_per_s']:.2f} samples/s"


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
