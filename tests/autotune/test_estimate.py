"""The estimate's line, the terms on top of it, their calibration, the card table and the command."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from autotune import estimate as E
from autotune.cli import main
from autotune.estimate import terms as T
from autotune.run.config import Variant
from probes.protocol import ModelSpec, ProbeRequest, ProbeResult

MiB, GiB = E.MiB, E.GiB
SPEC = ModelSpec("act", 2, (480, 640), 6, 6, gradient_checkpointing=False)


def counted(
    fixed: float = 1 * GiB, per_sample: float = 100 * MiB, target: str = "cuda", precision: str = "bf16"
) -> dict:
    """What an estimate child reports: flat below batch 4 (the optimizer step peaks there), then a line."""
    points = [[b, int(max(fixed + per_sample * 4, fixed + per_sample * b))] for b in E.ESTIMATE_BATCH_SIZES]
    return {
        "target": target,
        "precision": precision,
        "points": points,
        "segment_rounding": [[32, 40 * MiB]],
        "weights_bytes": 200 * MiB,
        "optimizer_state_bytes": 400 * MiB,
        "casts": 10,
        "wall_s": 1.5,
    }


def estimate(**kwargs: object) -> E.Estimate:
    return E.from_result(ProbeResult(status="ok", batch_size=0, estimate=counted(**kwargs)), SPEC)  # type: ignore[arg-type]


def test_the_line_runs_through_the_two_largest_counted_sizes() -> None:
    est = estimate()
    assert est.per_sample_bytes == pytest.approx(100 * MiB)
    assert est.fixed_bytes == pytest.approx(1 * GiB, abs=2)
    assert est.live_at(2) == est.live_at(4)  # below the line the counted points themselves
    assert est.live_at(1000) == pytest.approx(1 * GiB + 1000 * 100 * MiB, rel=1e-9)
    assert est.segment_rounding_bytes == 40 * MiB


def test_a_failed_estimate_is_a_value_error_naming_why() -> None:
    with pytest.raises(ValueError, match="boom"):
        E.from_result(ProbeResult(status="error", batch_size=0, message="RuntimeError: boom"), SPEC)


@pytest.mark.parametrize(
    ("config", "expected"),
    [(None, 32 * MiB), (":4096:2:16:8", 8 * MiB + 128 * 1024), (":1024:1", 1 * MiB)],
)
def test_cublas_workspace_follows_cublas_workspace_config(config: str | None, expected: int) -> None:
    env = {} if config is None else {"CUBLAS_WORKSPACE_CONFIG": config}
    assert T.cublas_workspace_bytes(env) == expected


def test_every_term_is_named_with_its_value_and_its_source() -> None:
    terms = T.default_terms(estimate(), env={})
    names = {t.name for t in terms.terms}
    assert names == {
        "cuda_context",
        "lazy_kernels",
        "cublas_workspace",
        "cudnn_workspace",
        "allocator_segments",
    }
    assert all(t.source and t.bytes >= 0 for t in terms.terms)
    assert terms.outside() == T.CUDA_CONTEXT_BYTES + T.LAZY_KERNELS_BYTES
    assert dict((t.name, t.bytes) for t in terms.terms)["allocator_segments"] == 40 * MiB
    cpu = T.default_terms(estimate(target="cpu", precision="fp32"))
    assert [t.name for t in cpu.terms] == ["cpu_runtime"] and cpu.outside() == 0


def test_a_card_takes_the_terms_and_keeps_the_headroom() -> None:
    est = estimate()
    terms = T.default_terms(est, env={})
    cards = [E.predict_card(est, terms, g * GiB, 0.1) for g in E.CARD_SIZES_GIB]
    assert [c.max_batch_size for c in cards] == sorted(c.max_batch_size for c in cards)
    for card in cards:
        budget = card.memory_bytes - terms.outside()
        assert (
            E.peak_bytes(est, terms, card.max_batch_size)
            <= budget
            < E.peak_bytes(est, terms, card.max_batch_size + 1)
        )
        assert card.batch_size <= card.max_batch_size
        assert E.peak_bytes(est, terms, card.batch_size) <= 0.9 * budget
    assert E.predict_card(est, terms, 1 * GiB, 0.1).max_batch_size == 0
    assert E.smallest_card(est, terms) == 8


def write_profile(results: Path, name: str, device_type: str, **conditions: object) -> None:
    cond = {"cameras": 2, "image_size": [480, 640], "state_dim": 6, "action_dim": 6, "policy_overrides": {}}
    cond.update(conditions)
    profile = {
        "version": 1,
        "policy": "act",
        "run_id": f"run-{name}",
        "created_at": "2026-11-25T10:00:00",
        "precision": "bf16",
        "grad_checkpointing": False,
        "fingerprint": {"device_type": device_type, "gpu_name": "NVIDIA H100 80GB HBM3"},
        "conditions": cond,
        "memory_model": {
            "fixed_bytes": 1.5 * GiB,
            "per_sample_bytes": 104 * MiB,
            "device_overhead_bytes": 900 * MiB,
            "near_limit_unusable_bytes": 1.6 * GiB,
            "budget_bytes": 80 * GiB,
        },
    }
    (results / "profiles").mkdir(parents=True, exist_ok=True)
    (results / "profiles" / f"{name}.json").write_text(json.dumps(profile))


def test_a_gpu_profile_calibrates_the_terms(tmp_path: Path) -> None:
    est = estimate()
    write_profile(tmp_path, "act", "cuda")
    terms = T.calibrate(T.default_terms(est, env={}), est, SPEC, tmp_path)
    by_name = {t.name: t for t in terms.terms}
    assert by_name["cuda_context"].bytes == 900 * MiB and "H100" in by_name["cuda_context"].source
    assert terms.fragmentation_share == pytest.approx(0.02)
    # The very model and variant: the workspaces are the measured fixed cost less the count's.
    assert "cublas_workspace" not in by_name and "workspaces" in by_name
    expected = 1.5 * GiB - est.fixed_bytes * 1.02 - 40 * MiB
    assert by_name["workspaces"].bytes == pytest.approx(max(0, expected), abs=2)
    assert terms.calibrated_from and "run-act" in terms.calibrated_from


def test_a_profile_of_other_shapes_calibrates_only_what_the_device_fixes(tmp_path: Path) -> None:
    est = estimate()
    write_profile(tmp_path, "act", "cuda", cameras=3)
    terms = T.calibrate(T.default_terms(est, env={}), est, SPEC, tmp_path)
    names = {t.name for t in terms.terms}
    assert "cublas_workspace" in names and "workspaces" not in names
    assert terms.outside() == 900 * MiB + T.LAZY_KERNELS_BYTES


def test_a_committed_reference_run_calibrates_too(tmp_path: Path) -> None:
    est = estimate()
    write_profile(tmp_path / "reference" / "NVIDIA H100 80GB HBM3", "act", "cuda")
    terms = T.calibrate(T.default_terms(est, env={}), est, SPEC, tmp_path)
    assert terms.calibrated_from is not None and "H100" in terms.calibrated_from


def test_a_cpu_profile_calibrates_nothing(tmp_path: Path) -> None:
    est = estimate()
    write_profile(tmp_path, "act", "cpu")
    assert T.calibrate(T.default_terms(est, env={}), est, SPEC, tmp_path).calibrated_from is None


class EstimatingProber:
    def __init__(self, result: ProbeResult) -> None:
        self.result = result
        self.asked: list[Variant] = []

    def estimate(self, variant: Variant) -> ProbeResult:
        self.asked.append(variant)
        return self.result


def run_context(tmp_path: Path) -> SimpleNamespace:
    return SimpleNamespace(
        spec=lambda variant: SPEC,
        cfg=SimpleNamespace(results=tmp_path, memory_limit_bytes=None, estimate=True),
        memory_limit=int(20 * GiB),
    )


def test_the_search_starts_from_the_estimate_in_the_budgets_units(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    prober = EstimatingProber(ProbeResult(status="ok", batch_size=0, estimate=counted()))
    with caplog.at_level(logging.INFO):
        prior = E.search_start(run_context(tmp_path), prober, Variant("bf16", False))
    assert prior is not None and prober.asked
    est = estimate()
    terms = T.default_terms(est)
    assert prior.per_sample_bytes == pytest.approx(100 * MiB * (1 + terms.fragmentation_share))
    # The line crosses the card's 20 GiB where the estimate puts the maximum: the context and the
    # kernels' slack off the card, the rest inside the allocator.
    assert prior.max_batch_under(20 * GiB) == E.largest_batch(est, terms, 20 * GiB - terms.outside())
    assert "estimated on the meta device" in caplog.text


def test_no_estimate_leaves_the_search_blind_without_asking(tmp_path: Path) -> None:
    prober = EstimatingProber(ProbeResult(status="ok", batch_size=0, estimate=counted()))
    ctx = run_context(tmp_path)
    ctx.cfg.estimate = False  # --no-estimate
    assert E.search_start(ctx, prober, Variant("bf16", False)) is None
    assert not prober.asked


def test_a_failed_estimate_leaves_the_search_blind(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    prober = EstimatingProber(ProbeResult(status="error", batch_size=0, message="RuntimeError: boom"))
    assert E.search_start(run_context(tmp_path), prober, Variant("bf16", False)) is None
    assert "boom" in caplog.text
    assert E.search_start(run_context(tmp_path), object(), Variant("bf16", False)) is None


@pytest.fixture
def fake_children(monkeypatch: pytest.MonkeyPatch) -> list[ProbeRequest]:
    """Estimate children answered at once: 1 GiB fixed, 100 MiB per sample (more without checkpointing)."""
    asked: list[ProbeRequest] = []

    def run_probe(request: ProbeRequest, timeout_s: float, *args: object, **kwargs: object) -> ProbeResult:
        asked.append(request)
        assert request.kind == "estimate" and request.model is not None
        per_sample = (60 if request.model.gradient_checkpointing else 100) * MiB
        data = counted(per_sample=per_sample, precision=request.precision)
        return ProbeResult(status="ok", batch_size=0, estimate=data)

    import autotune.run.probe_client

    monkeypatch.setattr(autotune.run.probe_client, "run_probe", run_probe)
    return asked


def test_estimate_json_has_the_terms_and_a_card_table(
    fake_children: list[ProbeRequest], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert (
        main(["-q", "estimate", "--policy", "act", "--cameras", "3", "--results", str(tmp_path), "--json"])
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert {"fixed_bytes", "per_sample_bytes", "overhead_bytes", "cards", "terms"} <= set(out)
    assert len(out["cards"]) == len(E.CARD_SIZES_GIB) * 2 * 2  # x (bf16, fp32) x checkpointing
    card = out["cards"][0]
    assert {"memory_bytes", "precision", "grad_checkpointing", "max_batch_size", "batch_size"} <= set(card)
    assert out["overhead_bytes"] == sum(t["bytes"] for t in out["terms"])
    assert {r.model.cameras for r in fake_children if r.model} == {3}
    on = [c for c in out["cards"] if c["grad_checkpointing"] and c["memory_bytes"] == 24 * GiB]
    off = [c for c in out["cards"] if not c["grad_checkpointing"] and c["memory_bytes"] == 24 * GiB]
    assert on[0]["max_batch_size"] > off[0]["max_batch_size"]


def test_estimate_for_one_card_prints_the_batch_and_the_terms(
    fake_children: list[ProbeRequest], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    args = ["-q", "estimate", "--policy", "act", "--memory", "12GiB", "--precision", "bf16"]
    assert main([*args, "--no-grad-checkpointing", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "12.00 GiB" in out and "cuda_context" in out and "allocator_fragmentation" in out
    assert len(fake_children) == 1


def test_a_card_too_small_for_batch_one_names_the_smallest_that_fits(
    fake_children: list[ProbeRequest], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["-q", "estimate", "--policy", "act", "--memory", "1GiB", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "too small" in err and "smallest common card that fits is 8 GiB" in err


def test_an_unknown_flag_value_is_one_line_and_exit_two(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["estimate", "--policy", "act", "--precision", "bf8"])
    assert exited.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
