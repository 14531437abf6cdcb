"""Models: registry, gate modes, skipping equals masking, gradient modes, FLOPs, torchvision layout."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from aigrobust import GateExecution, GateGrad, GateMode, create_model, list_models
from aigrobust.models.gates import GATE_BIAS_OFF_ON
from aigrobust.models.registry import UnknownModelError
from tests.conftest import half_closed, varied_images


def test_registry_lists_families_and_patterns() -> None:
    names = list_models()
    for depth in (14, 20, 32, 44, 56, 110):
        assert f"resnet{depth}" in names and f"aig{depth}" in names
    for name in ("resnet50", "resnet101", "aig50", "aig101", "tiny_resnet", "tiny_aig"):
        assert name in names
    assert list_models("aig*") == ["aig14", "aig20", "aig32", "aig44", "aig50", "aig56", "aig101", "aig110"]
    assert list_models(family="test") == ["tiny_aig", "tiny_resnet", "tiny_sdn"]
    assert list_models("sdn*") == ["sdn20", "sdn32", "sdn56"]


def test_unknown_model_suggests_close_names() -> None:
    with pytest.raises(UnknownModelError, match="did you mean.*aig20"):
        create_model("aig2O")


@pytest.mark.parametrize("name,params", [("resnet20", 269_722), ("resnet32", 464_154), ("resnet44", 658_586),
                                         ("resnet56", 853_018)])
def test_cifar_resnets_have_the_pretrained_files_parameter_counts(name: str, params: int) -> None:
    # Trainable-parameter counts of akamaster's files (../shared/data/README.md).
    assert sum(p.numel() for p in create_model(name).parameters()) == params


def test_depths_and_gate_counts() -> None:
    for depth in (20, 56, 110):
        model = create_model(f"aig{depth}")
        assert model.num_blocks == (depth - 2) // 2
        assert all(b.gate is not None for b in model.residual_blocks())  # downsampling blocks gated too
        assert model.target_rates == (0.7,) * model.num_blocks
    assert not create_model("resnet20").is_gated


def test_tiny_models_are_tiny() -> None:
    for name in ("tiny_resnet", "tiny_aig"):
        assert sum(p.numel() for p in create_model(name).parameters()) < 15_000


def test_gates_start_about_87_percent_open() -> None:
    model = create_model("aig20")
    gate = model.residual_blocks()[0].gate
    assert gate is not None
    assert torch.allclose(gate.fc2.bias, torch.tensor(GATE_BIAS_OFF_ON))
    assert gate.fc2.weight.std() < 5e-3
    model.eval()
    _, trace = model.forward_with_gates(varied_images(8))
    assert trace.p_on.mean().item() == pytest.approx(torch.sigmoid(torch.tensor(1.9)).item(), abs=0.02)


def test_training_mode_draws_gumbel_samples_and_eval_is_deterministic() -> None:
    model = half_closed(create_model("aig20"))
    x = varied_images(16)
    model.train()
    _, t1 = model.forward_with_gates(x)
    _, t2 = model.forward_with_gates(x)
    assert not torch.equal(t1.decisions, t2.decisions)  # a Gumbel draw each call
    values = t1.gate_values.detach()
    assert set(values.unique().tolist()) <= {0.0, 1.0}  # hard forward
    model.eval()
    a_logits, a_trace = model.forward_with_gates(x)
    b_logits, b_trace = model.forward_with_gates(x)
    assert torch.equal(a_logits, b_logits)
    assert torch.equal(a_trace.decisions, b_trace.decisions)
    assert 0.2 < a_trace.decisions.float().mean().item() < 0.8


def test_model_returns_logits_only_and_plain_models_trace_all_open() -> None:
    model = create_model("resnet20").eval()
    x = varied_images(3)
    out = model(x)
    assert isinstance(out, torch.Tensor) and out.shape == (3, 10)
    logits, trace = model.forward_with_gates(x)
    assert torch.equal(logits, out)
    assert trace.decisions.shape == (3, 9) and bool(trace.decisions.all())
    assert torch.equal(trace.p_on, torch.ones(3, 9))
    assert torch.allclose(trace.flops, torch.full((3,), model.flop_profile((3, 32, 32)).full, dtype=torch.float64))


def test_open_gates_equal_the_plain_resnet_with_the_same_weights() -> None:
    plain = create_model("resnet20").eval()
    gated = half_closed(create_model("aig20")).eval()
    missing, unexpected = gated.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(".gate." in k for k in missing)
    x = varied_images(8)
    with gated.gate_settings(mode="open"):
        assert torch.allclose(gated(x), plain(x), atol=1e-5)
    assert not torch.allclose(gated(x), plain(x), atol=1e-3)  # hard mode with closed gates differs


def test_a_closed_gate_returns_the_shortcut_alone() -> None:
    model = create_model("aig20").eval()
    block = model.residual_blocks()[1]  # identity shortcut
    with torch.no_grad():
        block.gate.fc2.bias.copy_(torch.tensor([10.0, -10.0]))
    x = torch.relu(torch.randn(4, 16, 32, 32))
    out, decision, _, _ = model._run_block(block, x, 1, model.gate_config, None)
    assert not decision.any()
    assert torch.equal(out, x)
    down = model.residual_blocks()[3]  # option-A downsampling block
    with torch.no_grad():
        down.gate.fc2.bias.copy_(torch.tensor([10.0, -10.0]))
    out, _, _, _ = model._run_block(down, x, 3, model.gate_config, None)
    assert torch.equal(out, F.relu(down.shortcut_path(x)))


def test_a_closed_branch_never_runs() -> None:
    model = half_closed(create_model("aig20")).eval()
    x = varied_images(32)
    model.flop_profile(tuple(x.shape[1:]))  # measured once, before the hooks
    calls: list[int] = []
    for block in model.residual_blocks():
        block.conv1.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    _, trace = model.forward_with_gates(x)
    assert calls == trace.decisions.sum(0)[trace.decisions.sum(0) > 0].tolist()
    assert sum(calls) < 32 * model.num_blocks


@pytest.mark.parametrize("name", ["aig20", "tiny_aig"])
def test_skipping_equals_masking_for_outputs_and_input_gradients(name: str) -> None:
    model = half_closed(create_model(name)).eval()
    x = varied_images(24)
    results = {}
    for execution in (GateExecution.SKIP, GateExecution.MASK):
        xi = x.clone().requires_grad_(True)
        with model.gate_settings(mode="hard", grad="exact", execution=execution):
            logits, trace = model.forward_with_gates(xi)
        loss = F.cross_entropy(logits, torch.arange(24) % 10)
        (grad,) = torch.autograd.grad(loss, xi)
        results[execution] = (logits.detach(), trace.decisions, grad)
    (l1, d1, g1), (l2, d2, g2) = results[GateExecution.SKIP], results[GateExecution.MASK]
    assert 0.1 < d1.float().mean() < 0.9
    assert torch.equal(d1, d2)
    assert torch.allclose(l1, l2, atol=1e-5)
    assert g1.abs().sum() > 0
    assert torch.allclose(g1, g2, atol=1e-5)


def test_exact_gradient_through_the_decision_is_zero_and_straight_through_is_not() -> None:
    model = half_closed(create_model("aig20")).eval()
    x = varied_images(16)
    gate_bias = [b.gate.fc2.bias for b in model.residual_blocks()]
    grads = {}
    for mode in (GateGrad.EXACT, GateGrad.STRAIGHT_THROUGH, GateGrad.SOFT):
        with model.gate_settings(grad=mode):
            loss = F.cross_entropy(model(x), torch.arange(16) % 10)
        g = torch.autograd.grad(loss, gate_bias, allow_unused=True)
        grads[mode] = sum(float(t.abs().sum()) for t in g if t is not None)
    assert grads[GateGrad.EXACT] == 0.0
    assert grads[GateGrad.STRAIGHT_THROUGH] > 0.0
    assert grads[GateGrad.SOFT] > 0.0


def test_straight_through_forward_equals_hard_and_soft_surrogate_differs() -> None:
    model = half_closed(create_model("aig20")).eval()
    x = varied_images(8)
    hard = model(x)
    with model.gate_settings(grad="straight-through"):
        assert torch.allclose(model(x), hard, atol=1e-5)
    with model.gate_settings(grad="soft"):
        assert not torch.allclose(model(x), hard, atol=1e-3)
    with model.gate_settings(mode="soft"):
        _, trace = model.forward_with_gates(x)
        assert bool(trace.decisions.all())
        assert torch.allclose(trace.gate_values, trace.p_on)


def test_stochastic_gates_draw_by_seed_input_and_draw_name_never_by_batch() -> None:
    from aigrobust.randomness import keyed_draw

    model = half_closed(create_model("aig20")).eval()
    x = varied_images(16)
    model.set_gate_mode("stochastic", seed=7)
    a = model.forward_with_gates(x)[1].decisions
    assert torch.equal(model.forward_with_gates(x)[1].decisions, a)  # the same input, the same draw
    with keyed_draw(model, "eot/1"):
        b = model.forward_with_gates(x)[1].decisions
    assert not torch.equal(a, b)  # another draw
    assert model.draw_key == ""  # the draw's name comes back
    with keyed_draw(model, "eot/1"), keyed_draw(model, "eot/1"):
        assert model.draw_key == "eot/1/eot/1"  # nested draws stay distinct
    # a row meets the same gates whatever batch it shares and wherever it sits in it
    order = torch.tensor([9, 3, 15])
    assert torch.equal(model.forward_with_gates(x[order])[1].decisions, a[order])
    assert torch.equal(model.forward_with_gates(x.to(memory_format=torch.channels_last))[1].decisions, a)
    nudged = x.clone()
    nudged[:, 0, 0, 0] = (nudged[:, 0, 0, 0] + 1 / 255) % 1
    assert not torch.equal(model.forward_with_gates(nudged)[1].decisions, a)  # new inputs, new draws
    model.set_gate_mode("stochastic", seed=8)
    assert not torch.equal(model.forward_with_gates(x)[1].decisions, a)  # another seed
    # the share of open gates follows the gates' probabilities (the keyed draws are uniform)
    model.set_gate_mode("stochastic", seed=7)
    many = varied_images(64)
    opened, p_on = [], []
    for d in range(8):
        with keyed_draw(model, f"eot/{d}"), torch.no_grad():
            trace = model.forward_with_gates(many)[1]
        opened.append(trace.decisions.float().mean())
        p_on.append(trace.p_on.mean())
    assert abs(float(torch.stack(opened).mean() - torch.stack(p_on).mean())) < 0.02


def test_the_randomness_probe_sees_stochastic_gates_through_their_keyed_draws() -> None:
    from aigrobust.checks.probes import model_probes

    model = half_closed(create_model("aig20")).eval()  # gates open for some inputs only: draws differ
    x, y = varied_images(16), torch.arange(16) % 10

    def randomness(mode: str) -> str:
        model.set_gate_mode(mode, seed=0)
        flags = model_probes("tiny", model, x, y, 10, pgd_steps=1)
        return next(f.status for f in flags if f.check == "eval-randomness")

    assert randomness("stochastic") == "warn"  # the same input, two named draws: different logits
    assert randomness("hard") == "ok"
    model.set_gate_mode("hard")
    with pytest.raises(ValueError):
        model.set_gate_mode("train")
    assert GateMode("HARD") is GateMode.HARD
    assert GateGrad("straight_through") is GateGrad.STRAIGHT_THROUGH


@pytest.mark.parametrize("name,shape", [("aig20", (3, 32, 32)), ("resnet56", (3, 32, 32)), ("tiny_aig", (3, 32, 32)),
                                        ("aig20", (3, 48, 40))])
def test_flops_with_every_gate_open_equal_flop_counter_of_the_whole_model(name: str, shape: tuple[int, ...]) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    model = create_model(name).eval()
    profile = model.flop_profile(shape)
    x = torch.rand(2, *shape)
    with model.gate_settings(mode="open"), FlopCounterMode(display=False) as counter, torch.no_grad():
        _, trace = model.forward_with_gates(x)
    whole = counter.get_total_flops() / 2  # counted for a batch of 2
    assert profile.full == pytest.approx(whole, rel=0.01)
    assert torch.allclose(trace.flops, torch.full((2,), whole, dtype=torch.float64), rtol=0.01)


def test_executed_flops_follow_the_decisions() -> None:
    model = half_closed(create_model("aig20")).eval()
    _, trace = model.forward_with_gates(varied_images(16))
    profile = model.flop_profile((3, 32, 32))
    expected = profile.fixed + trace.decisions.double() @ torch.tensor(profile.residual, dtype=torch.float64)
    assert torch.allclose(trace.flops, expected)
    assert (trace.flops < profile.full).any()
    assert (trace.flops >= profile.fixed).all()


def test_cifar_option_b_and_reference_key_layout() -> None:
    model = create_model("aig20", shortcut="B")
    keys = set(model.state_dict())
    assert "layer2.0.shortcut.0.weight" in keys and "layer2.0.shortcut.1.running_var" in keys
    assert "layer1.0.gate.fc1bn.weight" in keys and "linear.weight" in keys
    plain_a = set(create_model("resnet20").state_dict())
    assert not any("shortcut" in k for k in plain_a)  # option A has no shortcut weights


def test_imagenet_layout_matches_torchvision_and_computes_the_same() -> None:
    import torchvision

    reference = torchvision.models.resnet50(weights=None).eval()
    ours = create_model("resnet50").eval()
    ref_state = reference.state_dict()
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == {k: tuple(v.shape) for k, v in ref_state.items()}
    ours.load_state_dict(ref_state)
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(ours(x), reference(ours.normalize(x)), atol=1e-4)


def test_aig_imagenet_target_schedules() -> None:
    aig50 = create_model("aig50", target_rate=0.5)
    assert aig50.target_rates == (1, 1, 0.8, 1, 0.5, 0.5, 0.5, 1, 0.5, 0.5, 0.5, 0.5, 0.5, 1, 0.7, 1)
    aig101 = create_model("aig101", target_rate=0.6)
    assert aig101.target_rates == (1.0,) * 8 + (0.6,) * 25


def test_logits_only_forward_equals_the_traced_forward_at_batch_1_and_mixed() -> None:
    model = half_closed(create_model("tiny_aig")).eval()
    x = varied_images(16, seed=5)
    with torch.no_grad():
        traced, trace = model.forward_with_gates(x)
        assert 0 < float(trace.decisions.float().mean()) < 1  # a mixed batch: some gates open, some closed
        assert torch.equal(model(x), traced)
        for i in range(4):  # batch 1: every gate agrees with itself, the block runs or is skipped whole
            assert torch.allclose(model(x[i : i + 1]), traced[i : i + 1], atol=1e-5)
    # gradients through the logits-only path are the traced path's gradients
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    (ga,) = torch.autograd.grad(model(xa).logsumexp(1).sum(), xa)
    (gb,) = torch.autograd.grad(model.forward_with_gates(xb)[0].logsumexp(1).sum(), xb)
    assert torch.allclose(ga, gb, atol=1e-6)


def test_gate_behaviour_is_one_frozen_config_replaced_whole() -> None:
    """Gate mode, gradient, execution, seed and draw name are one frozen value; settings, draws and
    forwards replace or read it, never change it piece by piece or leave state behind."""
    import dataclasses

    from aigrobust.models.gates import GateConfig
    from aigrobust.randomness import keyed_draw

    model = create_model("tiny_aig").eval()
    before = model.gate_config
    assert before == GateConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        before.mode = "soft"  # type: ignore[misc]
    with model.gate_settings(mode="stochastic", grad="soft", execution="mask"):
        inside = model.gate_config
        assert (inside.mode, inside.grad, inside.execution) == ("stochastic", "soft", "mask")
        with keyed_draw(model, "eot/1"):
            assert model.gate_config.draw_key == "eot/1" and inside.draw_key == ""
        model(torch.rand(2, 3, 32, 32))
    assert model.gate_config is before  # the very value it had
    assert not any(name.startswith("_row_keys") for name in vars(model))  # nothing a forward leaves behind


def test_randomized_gates_close_about_half_the_decisions_and_vary_per_image() -> None:
    from aigrobust.models.gates import randomize_gates

    model = create_model("aig20").eval()
    assert randomize_gates(model) is model
    _, trace = model.forward_with_gates(varied_images(64))
    closed = 1.0 - trace.decisions.float().mean(0)
    assert 0.4 < closed.mean().item() < 0.8
    assert int(((closed > 0.1) & (closed < 0.9)).sum()) >= 4  # gates that decide per image
    again = randomize_gates(create_model("aig20").eval())
    gate_weights = [name for name in model.state_dict() if name.endswith(("fc1.weight", "fc2.weight", "fc2.bias"))]
    assert len(gate_weights) == 3 * 9
    assert all(torch.equal(model.state_dict()[name], again.state_dict()[name]) for name in gate_weights)
