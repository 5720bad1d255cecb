"""The answers of ``autotune rl``: one dict per command (printed as JSON with ``--json``, kept as the
profile after ``--measure``) and its text on stdout."""

from __future__ import annotations

from typing import Any

from autotune.rl import ppo as P
from autotune.rl.measure import Budget, PpoMeasurement, RrdMeasurement
from autotune.rl.records import search_summary
from autotune.rl.rrd import RrdBatch, nearby_multiples
from autotune.rl.spec import NetSpec
from autotune.units import format_bytes

ISAACLAB_TRAIN = "./isaaclab.sh -p scripts/reinforcement_learning/rl_games/train.py --task <TASK>"


def _conditions(budget: Budget, gpu_name: str, net: NetSpec) -> dict[str, Any]:
    return {
        "device": budget.device,
        "gpu_name": gpu_name,
        "precision": budget.precision,
        "memory_limit_bytes": budget.memory_limit_bytes,
        "headroom": budget.headroom,
        "network": {
            "obs_shape": list(net.obs_shape),
            "obs_dtype": net.obs_dtype,
            "act_dim": net.act_dim,
            "hidden": list(net.hidden),
            "reward_hidden": list(net.reward_hidden),
        },
    }


def ppo_answer(
    ppo: P.PpoBatch,
    checked: int | None = None,
    measured: PpoMeasurement | None = None,
    budget: Budget | None = None,
    gpu_name: str = "",
    net: NetSpec | None = None,
) -> dict[str, Any]:
    """Everything ``autotune rl ppo`` says; ``minibatch_size`` is the hand rule's choice."""
    rule = ppo.hand_rule_minibatch
    if measured is not None:
        chosen, source = measured.minibatch_size, "measured"
    elif checked is not None:
        chosen, source = checked, "--minibatch-size"
    else:
        chosen, source = rule, "hand rule"
    fp16 = budget is not None and budget.precision == "fp16"
    answer: dict[str, Any] = {
        "algo": "ppo",
        "num_envs": ppo.num_envs,
        "horizon_length": ppo.horizon_length,
        "mini_epochs": ppo.mini_epochs,
        "batch_size": ppo.batch_size,
        "valid_minibatch_sizes": ppo.valid_minibatch_sizes,
        "minibatch_size": rule,
        "hand_rule": {
            "minibatch_size": rule,
            "source": P.HAND_RULE_SOURCE,
            "script_code_minibatch_size": ppo.script_code_minibatch,
            "note": P.hand_rule_note(ppo),
        },
        "checked_minibatch_size": checked,
        "recommended_minibatch_size": chosen,
        "recommended_from": source,
        "minibatches_per_epoch": ppo.minibatches_per_epoch(chosen),
        "optimizer_steps_per_update": ppo.optimizer_steps_per_update(chosen),
        "rl_games_assert": P.ASSERT_TEXT,
        "rl_games_config": {
            "num_actors": ppo.num_envs,
            "horizon_length": ppo.horizon_length,
            "minibatch_size": chosen,
            "mini_epochs": ppo.mini_epochs,
            **({"mixed_precision": True} if fp16 else {}),
        },
        "rl_games_yaml": P.rl_games_yaml(ppo, chosen, fp16),
        "isaaclab_overrides": P.isaaclab_overrides(ppo, chosen, fp16),
        "measured": None,
        "notes": [],
    }
    if budget is not None and budget.precision == "bf16":
        answer["notes"].append(
            "measured in bf16, which rl_games cannot select: its mixed_precision is fp16 autocast "
            "(rl_games/algos_torch/a2c_continuous.py); measure with --precision fp16 or fp32 to match it"
        )
    if measured is not None and budget is not None and net is not None:
        answer["measured"] = _ppo_measured(ppo, measured, budget, gpu_name, net)
    return answer


def _ppo_measured(
    ppo: P.PpoBatch, measured: PpoMeasurement, budget: Budget, gpu_name: str, net: NetSpec
) -> dict[str, Any]:
    """What ``--measure`` found: the largest fitting and valid minibatches, throughput and soaks."""
    d = measured.decision
    return {
        **_conditions(budget, gpu_name, net),
        "budget_bytes": measured.search.budget_bytes,
        "max_fitting_minibatch": measured.search.max_batch,
        "certified": measured.search.certified,
        "whole_batch_fits": measured.search.capped,
        "next_valid_minibatch": next(
            (v for v in ppo.valid_minibatch_sizes if v > measured.search.max_batch), None
        ),
        "max_minibatch_size": measured.max_valid_minibatch,
        "headroom_minibatch_size": measured.headroom_valid_minibatch,
        "minibatch_size": measured.minibatch_size,
        "samples_per_s": measured.samples_per_s,
        "throughput": [
            {
                "minibatch_size": p.batch_size,
                "samples_per_s": p.samples_per_s,
                "step_time_s": p.step_time_s,
                "peak_reserved_bytes": p.peak_reserved_bytes,
                "phase": p.phase,
            }
            for p in d.curve
            if ppo.batch_size % p.batch_size == 0
        ],
        "soaks": [s.__dict__ for s in d.soaks],
        "search": search_summary(measured.search),
        "probes": measured.probes,
    }


def print_ppo(a: dict[str, Any]) -> None:
    valid = a["valid_minibatch_sizes"]
    rule = a["hand_rule"]
    print(
        f"PPO with rl_games: {a['num_envs']} envs x horizon {a['horizon_length']} = batch "
        f"{a['batch_size']}, {a['mini_epochs']} mini-epochs per update"
    )
    print(
        f"valid minibatch sizes ({len(valid)}, each divides {a['batch_size']}): {', '.join(map(str, valid))}"
    )
    print(
        f"hand rule: minibatch {rule['minibatch_size']} "
        f"({a['batch_size'] // rule['minibatch_size']} minibatches per epoch)"
    )
    print(f"  {rule['note']}")
    if a["checked_minibatch_size"] is not None:
        m = a["checked_minibatch_size"]
        print(f"--minibatch-size {m}: valid ({a['batch_size'] // m} minibatches per epoch)")
    m = a["measured"]
    if m is not None:
        budget = format_bytes(m["budget_bytes"])
        where = m["gpu_name"] or m["device"]
        if m["whole_batch_fits"]:
            fit = f"the whole batch ({m['max_fitting_minibatch']}) fits as one minibatch"
        else:
            fit = (
                f"the largest valid minibatch that fits is {m['max_fitting_minibatch']}"
                f"{' (certified: the next valid size, ' + str(m['next_valid_minibatch']) + ', does not)' if m['certified'] else ''}"
            )
        print(f"measured on {where} ({m['precision']}, budget {budget}): {fit}")
        timed = ", ".join(f"{p['minibatch_size']}: {p['samples_per_s']:.0f}" for p in m["throughput"])
        print(
            f"recommended minibatch: {m['minibatch_size']} (fastest valid size within "
            f"{m['headroom']:.0%} headroom, largest {m['headroom_minibatch_size']}; samples/s {timed}; "
            f"{m['probes']} probes)"
        )
        soaked = [s for s in m["soaks"] if not s["lowered"]]
        if soaked:
            print(
                f"  a whole update ({a['mini_epochs']} passes) at {soaked[-1]['batch_size']} trained within the headroom"
            )
    chosen = a["recommended_minibatch_size"]
    print(
        f"use minibatch_size {chosen} ({a['recommended_from']}): {a['minibatches_per_epoch']} minibatches "
        f"per epoch, {a['optimizer_steps_per_update']} optimizer steps per update (rl_games checks "
        f"{a['rl_games_assert']} at start-up, rl_games/common/a2c_common.py)"
    )
    print("rl_games agent config:")
    for line in a["rl_games_yaml"]:
        print(f"  {line}")
    print("Isaac Lab (num_actors follows --num_envs):")
    print(f"  {ISAACLAB_TRAIN} {' '.join(a['isaaclab_overrides'])}")
    for note in a["notes"]:
        print(f"note: {note}")


def rrd_answer(
    rrd: RrdBatch,
    measured: RrdMeasurement | None = None,
    budget: Budget | None = None,
    gpu_name: str = "",
    net: NetSpec | None = None,
) -> dict[str, Any]:
    """Everything ``autotune rl rrd`` says."""
    below, above = nearby_multiples(rrd.rrd_batch_size, rrd.rrd_sample_size)
    answer: dict[str, Any] = {
        "algo": "rrd",
        "batch_size": rrd.batch_size,
        "rrd_batch_size": rrd.rrd_batch_size,
        "rrd_sample_size": rrd.rrd_sample_size,
        "train_batches": rrd.train_batches,
        "obs_shape": list(rrd.obs_shape),
        "obs_dtype": rrd.obs_dtype,
        "act_dim": rrd.act_dim,
        "episode_length": rrd.episode_length,
        "subsequences_per_batch": rrd.subsequences_per_batch,
        "rrd_timesteps_per_batch": rrd.rrd_timesteps,
        "dropped_timesteps": rrd.dropped_timesteps,
        "valid": rrd.valid,
        "valid_rrd_batch_sizes_nearby": [rrd.rrd_batch_size] if rrd.valid else [below, above],
        "coupling_note": rrd.coupling_note(),
        "transition_bytes": rrd.transition_bytes,
        "q_bytes_per_batch": rrd.q_bytes_per_batch,
        "rrd_bytes_per_batch": rrd.rrd_bytes_per_batch,
        "bytes_per_batch": rrd.bytes_per_batch,
        "bytes_per_iteration": rrd.bytes_per_iteration,
        "gathered_bytes_per_batch": rrd.gathered_bytes_per_batch,
        "gathered_bytes_per_iteration": rrd.gathered_bytes_per_batch * rrd.train_batches,
        "measured": None,
    }
    if measured is not None and budget is not None and net is not None:
        s = rrd.rrd_sample_size
        by_b, by_k = measured.batch_search, measured.subsequence_search
        answer["measured"] = {
            **_conditions(budget, gpu_name, net),
            "budget_bytes": min(by_b.budget_bytes, by_k.budget_bytes),
            "max_batch_size": by_b.max_batch,
            "max_batch_size_certified": by_b.certified,
            "headroom_batch_size": measured.headroom_batch_size,
            "max_rrd_batch_size": by_k.max_batch * s,
            "max_rrd_batch_size_certified": by_k.certified,
            "headroom_rrd_batch_size": measured.headroom_subsequences * s,
            "batch_size_search": search_summary(by_b),
            "subsequence_search": search_summary(by_k),
            "probes": measured.probes,
        }
    return answer


def _certified(ok: bool, capped: bool) -> str:
    return (
        " (certified: the next size does not fit)" if ok else " (the search's upper bound)" if capped else ""
    )


def print_rrd(a: dict[str, Any]) -> None:
    obs = "x".join(map(str, a["obs_shape"]))
    print(
        f"RRD: per batch {a['batch_size']} transitions (BATCH_SIZE) + {a['subsequences_per_batch']} "
        f"subsequence(s) of {a['rrd_sample_size']} timesteps (RRD_BATCH_SIZE {a['rrd_batch_size']} // "
        f"RRD_SAMPLE_SIZE {a['rrd_sample_size']}); {a['train_batches']} batches per iteration"
    )
    if a["valid"]:
        print(
            f"coupling: valid (RRD_BATCH_SIZE {a['rrd_batch_size']} is a multiple of {a['rrd_sample_size']})"
        )
    else:
        print(f"coupling: {a['coupling_note']}")
    print(
        f"transition: {obs} {a['obs_dtype']} observation + {a['act_dim']} float32 actions = "
        f"{format_bytes(a['transition_bytes'])} ({a['transition_bytes']} B)"
    )
    print(
        f"bytes per batch: {format_bytes(a['q_bytes_per_batch'])} (Q-network/policy) + "
        f"{format_bytes(a['rrd_bytes_per_batch'])} (reward network) = {format_bytes(a['bytes_per_batch'])}"
    )
    print(f"bytes per iteration ({a['train_batches']} batches): {format_bytes(a['bytes_per_iteration'])}")
    print(
        f"  as the reference buffer gathers them (next observations, rewards, dones too): "
        f"{format_bytes(a['gathered_bytes_per_batch'])} per batch, "
        f"{format_bytes(a['gathered_bytes_per_iteration'])} per iteration"
    )
    m = a["measured"]
    if m is None:
        return
    where = m["gpu_name"] or m["device"]
    print(
        f"measured on {where} ({m['precision']}, budget {format_bytes(m['budget_bytes'])}, {m['probes']} probes):"
    )
    bs, ks = m["batch_size_search"], m["subsequence_search"]
    print(
        f"  largest BATCH_SIZE that fits with RRD_BATCH_SIZE {a['rrd_batch_size']}: {m['max_batch_size']}"
        f"{_certified(m['max_batch_size_certified'], bs['capped'])}; within {m['headroom']:.0%} headroom: "
        f"{m['headroom_batch_size']}"
    )
    print(
        f"  largest RRD_BATCH_SIZE (a multiple of {a['rrd_sample_size']}) that fits with BATCH_SIZE "
        f"{a['batch_size']}: {m['max_rrd_batch_size']}{_certified(m['max_rrd_batch_size_certified'], ks['capped'])}; "
        f"within headroom: {m['headroom_rrd_batch_size']}"
    )
