"""The kernels layer: what the probe's facts choose per device, and the start-up proof that turns a failing fast path
off (a fault injected into a piece stands in for a kernel that breaks on some device)."""

import pytest
import torch

from engine.config.loading import load_profile
from engine.kernels.choice import PIECES, REFERENCE, DeviceFacts, KernelChoice, choose, probe_device
from engine.train.kernel_proof import FAULT_ENV, prove

H200 = DeviceFacts(kind="cuda", name="NVIDIA H200", capability=(9, 0), shared_memory_per_block=232_448, bf16=True,
                   triton_version="3.6.0", unified_memory=False)
GB10 = DeviceFacts(kind="cuda", name="NVIDIA GB10", capability=(12, 1), shared_memory_per_block=101_376, bf16=True,
                   triton_version="3.6.0", unified_memory=True)
GB10_OLD_TRITON = DeviceFacts(kind="cuda", name="NVIDIA GB10", capability=(12, 1), shared_memory_per_block=101_376,
                              bf16=True, triton_version="3.5.1", unified_memory=True)
A100 = DeviceFacts(kind="cuda", name="NVIDIA A100-SXM4-80GB", capability=(8, 0), shared_memory_per_block=166_912,
                   bf16=True, triton_version="3.6.0")
T4 = DeviceFacts(kind="cuda", name="Tesla T4", capability=(7, 5), shared_memory_per_block=65_536, bf16=False,
                 triton_version="3.6.0")
SMALL_SHARED = DeviceFacts(kind="cuda", name="a small GPU", capability=(8, 9), shared_memory_per_block=12_288,
                          bf16=True, triton_version="3.6.0")
CPU = DeviceFacts(kind="cpu", name="cpu")

FUSED = "the model's own fused piece"  # the fused GELU of GPT-2's MLP, or the modern attention's QK-norm and rotary
OWN_PIECE = {"codelion-70m": "fused_gelu", "modern-70m": "fused_qk_rope"}
ALL_ON = dict.fromkeys([*(p for p in PIECES if p not in OWN_PIECE.values()), FUSED], True)


def states(choice: KernelChoice) -> dict[str, bool]:
    return {p: choice.on(p) for p in PIECES}


def for_profile(table: dict, name: str) -> dict:
    """A table written with FUSED, for one profile: FUSED becomes that profile's own piece."""
    return {OWN_PIECE[name] if k == FUSED else k: v for k, v in table.items()}


@pytest.mark.parametrize("name", OWN_PIECE)
@pytest.mark.parametrize("facts, use_bf16, expected, reasons", [
    (H200, True, ALL_ON, {}),
    (GB10, True, ALL_ON, {}),
    (GB10_OLD_TRITON, True, {**dict.fromkeys(ALL_ON, False), "bf16_residual": True},
     dict.fromkeys(["compile", "fused_loss", "fp8_head", FUSED], "Triton 3.5.1 cannot assemble for sm_121")),
    (A100, True, {**ALL_ON, "fp8_head": False}, {"fp8_head": "compute capability 8.0; 8.9 or newer"}),
    (T4, True, {**ALL_ON, "fp8_head": False, "bf16_residual": False},
     {"fp8_head": "compute capability 7.5", "bf16_residual": "no bf16 arithmetic"}),
    (SMALL_SHARED, True, {**dict.fromkeys(ALL_ON, False), "compile": True, "bf16_residual": True},
     dict.fromkeys(["fused_loss", FUSED], "need 16,384 bytes of shared memory per block; this device has 12,288")),
    (CPU, False, {**dict.fromkeys(ALL_ON, False), "compile": True},
     {"fused_loss": "off CUDA the reference path is the faster one", FUSED: "off CUDA the reference path",
      "fp8_head": "off CUDA", "bf16_residual": "fp32 on CPU"}),
])
def test_the_probes_facts_choose_each_piece_with_a_reason(name, facts, use_bf16, expected, reasons):
    profile = load_profile(name)
    choice = choose(facts, profile.run, profile.model, use_bf16)
    (other,) = set(OWN_PIECE.values()) - {OWN_PIECE[name]}
    assert states(choice) == {**for_profile(expected, name), other: False}
    assert "not used by this model" in choice.reasons[other]
    for piece, words in for_profile(reasons, name).items():
        assert words in choice.reasons[piece], (piece, choice.reasons[piece])
    for piece in PIECES:
        assert choice.reasons[piece] == "on" if choice.on(piece) else choice.reasons[piece] != "on"


def test_the_profile_forces_a_piece_off_and_the_fp8_head_goes_with_the_one_pass_loss():
    profile = load_profile("codelion-70m", ["run.fused_loss=false", "run.compile=false"])
    choice = choose(H200, profile.run, profile.model, use_bf16=True)
    assert states(choice) == {**for_profile(ALL_ON, "codelion-70m"), "fused_qk_rope": False, "fused_loss": False,
                              "fp8_head": False, "compile": False}
    assert choice.reasons["fused_loss"] == "off in the profile (run.fused_loss = false)"
    assert choice.reasons["fp8_head"] == "needs the one-pass loss"


def test_the_fused_gelu_is_off_for_a_model_without_gelu():
    profile = load_profile("modern-70m")
    choice = choose(H200, profile.run, profile.model, use_bf16=True)
    assert not choice.fused_gelu and "not used by this model" in choice.reasons["fused_gelu"]


def test_the_cpu_probe_and_a_choice_round_trip_through_a_checkpoints_dict():
    facts = probe_device(torch.device("cpu"))
    assert facts.kind == "cpu" and not facts.fp8 and facts.triton_problem is None
    choice = choose(facts, load_profile("tiny-cpu").run, load_profile("tiny-cpu").model, use_bf16=False)
    again = KernelChoice.from_dict(choice.as_dict())
    assert again == choice and again.reasons == choice.reasons


def tiny_choice():
    """tiny-cpu with the one-pass loss and the fused GELU on: off CUDA they run the same arithmetic as torch
    operations, so the proof runs them for real on the CPU."""
    on = {"fused_loss": "on", "fused_gelu": "on"}
    return load_profile("tiny-cpu"), KernelChoice(fused_loss=True, fused_gelu=True, reasons=on)


def test_the_proof_keeps_every_piece_that_matches_the_reference():
    profile, choice = tiny_choice()
    proof = prove(choice, profile.model, torch.device("cpu"), use_bf16=False)
    assert proof.failures == [] and proof.choice == choice


@pytest.mark.parametrize("fault, words", [
    ("raise", "injected fault: the kernel failed to build"),
    ("nan", "non-finite loss or gradients"),
    ("wrong", "differs from the reference path"),
])
def test_a_failing_piece_is_turned_off_with_its_reason_and_the_others_stay(monkeypatch, fault, words):
    monkeypatch.setenv(FAULT_ENV, f"fused_gelu={fault}")
    profile, choice = tiny_choice()
    rng = torch.get_rng_state()
    proof = prove(choice, profile.model, torch.device("cpu"), use_bf16=False)
    assert [piece for piece, _ in proof.failures] == ["fused_gelu"] and words in proof.failures[0][1]
    assert not proof.choice.fused_gelu and proof.choice.fused_loss
    assert proof.choice.reasons["fused_gelu"].startswith("fell back at start: ")
    assert torch.equal(torch.get_rng_state(), rng)  # the run's own initialisation is not moved by the proof


def test_the_proof_runs_the_modern_attentions_fused_qk_norm_and_rotary(monkeypatch):
    profile = load_profile("tiny-cpu", ["model.arch=modern", "model.bias=false"])
    choice = KernelChoice(fused_qk_rope=True, reasons={"fused_qk_rope": "on"})
    assert prove(choice, profile.model, torch.device("cpu"), use_bf16=False).choice == choice
    monkeypatch.setenv(FAULT_ENV, "fused_qk_rope=wrong")
    proof = prove(choice, profile.model, torch.device("cpu"), use_bf16=False)
    assert not proof.choice.fused_qk_rope and "differs from the reference path" in proof.failures[0][1]


def test_the_one_pass_loss_failing_takes_the_fp8_head_with_it():
    choice = KernelChoice(fused_loss=True, fp8_head=True, reasons={"fused_loss": "on", "fp8_head": "on"})
    off = choice.turned_off("fused_loss", "fell back at start: broken")
    assert not off.fused_loss and not off.fp8_head
    assert off.reasons["fp8_head"] == "off with the one-pass loss"


def test_the_reference_choice_has_every_piece_off():
    assert not any(REFERENCE.on(p) for p in PIECES)


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["raise", "wrong"])
def test_a_run_whose_fast_path_fails_at_start_trains_on_the_reference_path_and_says_so(logs, monkeypatch, fault):
    """The faulted run ends finished with the losses of a run that had the piece off from the start (on the CPU,
    torch.compile is the piece that runs: "wrong" compiles the proof's model for real)."""
    from cli_helpers import FAST, events, losses, sparknet

    from engine.files import read_json

    piece = "compile"
    common = ["train", "--profile", "tiny-cpu", *FAST, "--set", "run.tokens=8192", "--set", "run.compile=true"]
    off = sparknet(*common, "--name", "off", "--set", f"run.{piece}=false")
    monkeypatch.setenv(FAULT_ENV, f"{piece}={fault}")
    faulted = sparknet(*common, "--name", "faulted")
    runs = {d.name.rsplit("-", 1)[-1]: d for d in logs.iterdir()}
    assert read_json(runs["faulted"] / "status.json")["state"] == "finished", faulted.stdout
    warnings = [e["message"] for e in events(runs["faulted"]) if e["event"] == "warning" and e.get("piece") == piece]
    assert len(warnings) == 1 and warnings[0].startswith("torch.compile off: "), warnings
    assert "the reference path runs instead" in warnings[0]
    assert not [e for e in events(runs["off"]) if e.get("piece")]
    reference, fallen_back = losses(runs["off"]), losses(runs["faulted"])
    assert reference and fallen_back.keys() == reference.keys()
    for step, loss in reference.items():
        assert fallen_back[step] == pytest.approx(loss, rel=1e-5), step
    assert off.returncode == 0
