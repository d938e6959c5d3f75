"""Proximal Adam against a float64 NumPy transcription of the update, torch's Adam/AdamW, and
brute-force minimisation of the prox objectives."""

import io

import numpy as np
import pytest
import torch

from tisfm_core.errors import TisfmError
from tisfm_core.prox import ProxAdam, prox_l1, prox_mcp

THETA0 = np.array([0.8, -0.45, 0.05, -0.02, 0.0, 1.5, -1.1, 0.3])
GRADS = np.array([
    [0.3, -0.2, 0.05, 0.01, -0.4, 0.9, -0.3, 0.02],
    [0.1, 0.25, -0.05, 0.03, 0.2, 1.1, -0.2, 0.04],
    [-0.2, 0.1, 0.02, -0.01, 0.1, 0.8, 0.1, -0.03],
    [0.05, -0.3, 0.04, 0.02, -0.1, 1.0, -0.25, 0.01],
    [0.2, 0.05, -0.01, 0.05, 0.3, 0.7, -0.15, -0.02],
])


def mcp_value(x, lam, gamma):
    """Minimax concave penalty rho(x; lam, gamma), elementwise."""
    ax = np.abs(x)
    return np.where(ax <= gamma * lam, lam * ax - ax**2 / (2 * gamma), gamma * lam**2 / 2)


def numpy_prox_adam(theta, grads, lr, betas, eps, wd, penalty, lam, b):
    """The reference doc 4.3 update written out in float64; MCP as its three explicit regions."""
    beta1, beta2 = betas
    theta = theta.astype(np.float64).copy()
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    history = []
    for t, g in enumerate(grads, start=1):
        theta = theta - lr * wd * theta
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g**2
        eta = lr / (1 - beta1**t)
        d = np.sqrt(v) / np.sqrt(1 - beta2**t) + eps
        theta_hat = theta - eta * m / d
        tau = eta * lam / d
        a = np.abs(theta_hat)
        if penalty == "l1":
            theta = np.where(a <= tau, 0.0, theta_hat - np.sign(theta_hat) * tau)
        elif penalty == "mcp":
            middle = np.sign(theta_hat) * b / (b - 1) * (a - tau)
            theta = np.where(a <= tau, 0.0, np.where(a <= b * tau, middle, theta_hat))
        else:
            theta = theta_hat
        history.append(theta.copy())
    return history


def run_prox_adam(theta, grads, **options):
    param = torch.nn.Parameter(torch.tensor(theta, dtype=torch.float64))
    optimizer = ProxAdam([param], **options)
    history = []
    for g in grads:
        param.grad = torch.tensor(g, dtype=torch.float64)
        optimizer.step()
        history.append(param.detach().numpy().copy())
    return history


@pytest.mark.parametrize("penalty,lam,wd", [("none", 0.0, 0.0), ("none", 0.0, 0.01),
                                            ("l1", 0.5, 0.0), ("mcp", 0.5, 0.0), ("mcp", 0.3, 0.01)])
def test_five_steps_match_numpy_formulas(penalty, lam, wd):
    options = dict(lr=0.05, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd, penalty=penalty, lam=lam, mcp_b=3.0)
    ours = run_prox_adam(THETA0, GRADS, **options)
    expected = numpy_prox_adam(THETA0, GRADS, 0.05, (0.9, 0.999), 1e-8, wd, penalty, lam, 3.0)
    for step, (a, b) in enumerate(zip(ours, expected)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12, err_msg=f"step {step + 1}")
    if penalty != "none":
        # The chosen lambda must actually shrink: some weights end at zero, some survive.
        assert np.any(ours[-1] == 0) and np.any(ours[-1] != 0)


def test_mcp_step_hits_all_three_regions():
    # Step 1: D = |g| + eps and eta = lr/(1-β1), so theta_hat = theta - lr*sign(g)·|g|/(|g|+eps)
    # and tau = lr*lam/((1-β1)(|g|+eps)).
    theta = np.array([0.02, 0.2, 0.9])
    grad = np.array([1.0, 1.0, 1.0])
    lr, lam = 0.01, 1.0  # tau ~= 0.1, b*tau ~= 0.3
    out = run_prox_adam(theta, [grad], lr=lr, penalty="mcp", lam=lam, mcp_b=3.0)[0]
    theta_hat = theta - lr / (1.0 + 1e-8)
    tau = lr * lam / (0.1 * (1.0 + 1e-8))
    assert out[0] == 0.0
    assert out[1] == pytest.approx(1.5 * (theta_hat[1] - tau), abs=1e-12)
    assert out[2] == pytest.approx(theta_hat[2], abs=1e-12)


@pytest.mark.parametrize("weight_decay,reference", [(0.01, torch.optim.AdamW), (0.0, torch.optim.Adam)])
@pytest.mark.parametrize("penalty", ["none", "l1"])
def test_unpenalised_equals_torch_adam(weight_decay, reference, penalty):
    gen = torch.Generator().manual_seed(0)
    start = [torch.randn(5, 7, generator=gen), torch.randn(7, generator=gen)]
    grads = [[torch.randn(p.shape, generator=gen) for p in start] for _ in range(6)]
    ours = [torch.nn.Parameter(p.clone()) for p in start]
    theirs = [torch.nn.Parameter(p.clone()) for p in start]
    # penalty "l1" with lam 0 must also be a plain Adam step.
    opt_ours = ProxAdam(ours, lr=0.01, weight_decay=weight_decay, penalty=penalty, lam=0.0)
    opt_theirs = reference(theirs, lr=0.01, weight_decay=weight_decay)
    for step_grads in grads:
        for p, q, g in zip(ours, theirs, step_grads):
            p.grad, q.grad = g.clone(), g.clone()
        opt_ours.step()
        opt_theirs.step()
        for p, q in zip(ours, theirs):
            torch.testing.assert_close(p, q, rtol=0, atol=1e-7)
    assert not torch.equal(ours[0], start[0])


@pytest.mark.parametrize("penalty", ["l1", "mcp"])
def test_large_lambda_zeroes_every_weight(penalty):
    gen = torch.Generator().manual_seed(1)
    param = torch.nn.Parameter(torch.randn(20, generator=gen) * 10)
    optimizer = ProxAdam([param], lr=0.1, penalty=penalty, lam=1e6)
    param.grad = torch.randn(20, generator=gen)
    optimizer.step()
    assert torch.count_nonzero(param) == 0


def test_prox_mcp_regions_and_tensor_tau():
    b = 3.0
    tau = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.2, 0.2])
    theta_hat = torch.tensor([0.4, -0.9, 1.2, -2.0, 0.59, -0.61])
    out = prox_mcp(theta_hat, tau, b)
    assert out[0] == 0  # |θ̂| <= τ
    assert out[1].item() == pytest.approx(-1.5 * (0.9 - 0.5), abs=1e-6)  # middle region × b/(b−1)
    assert out[2].item() == pytest.approx(1.5 * (1.2 - 0.5), abs=1e-6)
    assert out[3] == theta_hat[3]  # |θ̂| > bτ: untouched, bit for bit
    assert out[4].item() == pytest.approx(1.5 * (0.59 - 0.2), abs=1e-6)
    assert out[5] == theta_hat[5]
    # Continuity at the region borders.
    edges = torch.tensor([0.5, 1.5])
    torch.testing.assert_close(prox_mcp(edges, 0.5, 3.0), torch.tensor([0.0, 1.5]))


def brute_force_prox(z, penalty_fn):
    grid = np.linspace(-4.0, 4.0, 400_001)  # spacing 2e-5
    objective = 0.5 * (grid[None, :] - z[:, None]) ** 2 + penalty_fn(grid)[None, :]
    return grid[np.argmin(objective, axis=1)]


@pytest.mark.parametrize("tau,b", [(0.3, 3.0), (0.7, 1.5), (0.1, 10.0)])
def test_prox_mcp_is_exact_minimiser(tau, b):
    """Firm thresholding = argmin ½(x−θ̂)² + ρ(x; λ=τ, γ=b) (MCP with unit quadratic)."""
    z = np.linspace(-3.0, 3.0, 61) + 0.0123
    expected = brute_force_prox(z, lambda x: mcp_value(x, tau, b))
    ours = prox_mcp(torch.tensor(z), tau, b).numpy()
    np.testing.assert_allclose(ours, expected, atol=5e-5)


@pytest.mark.parametrize("tau", [0.0, 0.25, 1.3])
def test_prox_l1_is_exact_minimiser(tau):
    z = np.linspace(-3.0, 3.0, 61) + 0.0123
    expected = brute_force_prox(z, lambda x: tau * np.abs(x))
    ours = prox_l1(torch.tensor(z), tau).numpy()
    np.testing.assert_allclose(ours, expected, atol=5e-5)


def test_mixed_param_groups():
    penalised = torch.nn.Parameter(torch.tensor(THETA0))
    plain = torch.nn.Parameter(torch.tensor(THETA0[::-1].copy()))
    plain_ref = torch.nn.Parameter(plain.detach().clone())
    optimizer = ProxAdam([
        {"params": [penalised], "penalty": "mcp", "lam": 0.5, "mcp_b": 4.0},
        {"params": [plain], "weight_decay": 0.01},
    ], lr=0.05)
    reference = torch.optim.AdamW([plain_ref], lr=0.05, weight_decay=0.01)
    for g in GRADS:
        penalised.grad = torch.tensor(g)
        plain.grad = torch.tensor(g[::-1].copy())
        plain_ref.grad = plain.grad.clone()
        optimizer.step()
        reference.step()
    expected = numpy_prox_adam(THETA0, GRADS, 0.05, (0.9, 0.999), 1e-8, 0.0, "mcp", 0.5, 4.0)[-1]
    np.testing.assert_allclose(penalised.detach().numpy(), expected, atol=1e-12)
    torch.testing.assert_close(plain, plain_ref, rtol=0, atol=1e-12)


def test_state_dict_round_trip_continues_identically():
    def make():
        return torch.nn.Parameter(torch.tensor(THETA0))

    continuous = make()
    opt_c = ProxAdam([continuous], lr=0.05, penalty="l1", lam=0.2, weight_decay=0.01)
    interrupted = make()
    opt_i = ProxAdam([interrupted], lr=0.05, penalty="l1", lam=0.2, weight_decay=0.01)
    for g in GRADS[:3]:
        for p, o in ((continuous, opt_c), (interrupted, opt_i)):
            p.grad = torch.tensor(g)
            o.step()
    buffer = io.BytesIO()
    torch.save({"param": interrupted.detach(), "optim": opt_i.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed = torch.nn.Parameter(saved["param"].clone())
    opt_r = ProxAdam([resumed], lr=1.0)  # hyper-parameters come back from the state dict
    opt_r.load_state_dict(saved["optim"])
    assert opt_r.param_groups[0]["lam"] == 0.2 and opt_r.param_groups[0]["penalty"] == "l1"
    for g in GRADS[3:]:
        for p, o in ((continuous, opt_c), (resumed, opt_r)):
            p.grad = torch.tensor(g)
            o.step()
    assert opt_r.state[resumed]["step"] == 5
    torch.testing.assert_close(resumed, continuous, rtol=0, atol=0)


def test_params_without_grad_are_skipped():
    used = torch.nn.Parameter(torch.ones(3))
    unused = torch.nn.Parameter(torch.ones(3))
    optimizer = ProxAdam([used, unused], lr=0.1, weight_decay=0.5, penalty="l1", lam=0.1)
    used.grad = torch.ones(3)
    optimizer.step()
    assert torch.equal(unused, torch.ones(3)) and unused not in optimizer.state
    assert not torch.equal(used, torch.ones(3))


@pytest.mark.parametrize("options", [
    {"penalty": "l2"}, {"lam": -0.1}, {"mcp_b": 1.0}, {"betas": (1.0, 0.9)}, {"lr": -1.0},
    {"eps": float("nan")}, {"weight_decay": -0.01},
])
def test_invalid_options_raise(options):
    with pytest.raises(TisfmError):
        ProxAdam([torch.nn.Parameter(torch.zeros(2))], **options)


def test_invalid_group_options_raise():
    optimizer = ProxAdam([torch.nn.Parameter(torch.zeros(2))])
    with pytest.raises(TisfmError, match="param group 1"):
        optimizer.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))], "penalty": "lasso"})
    param = optimizer.param_groups[0]["params"][0]
    param.grad = torch.ones(2)
    optimizer.param_groups[0]["lam"] = -1.0  # edited in place, caught at step time
    with pytest.raises(TisfmError, match="'lam'"):
        optimizer.step()
    with pytest.raises(TisfmError):
        ProxAdam([])


def test_prox_functions_validate():
    with pytest.raises(TisfmError):
        prox_mcp(torch.ones(2), 0.1, b=1.0)
    with pytest.raises(TisfmError):
        prox_l1(torch.ones(2), -0.1)
    with pytest.raises(TisfmError):
        prox_l1(torch.ones(2), torch.tensor([0.1, -0.1]))
