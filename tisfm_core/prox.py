"""Proximal Adam: Adam steps followed by an L1 or MCP proximal map on the penalised groups.

This is the reference's ``AdamL1`` / ``AdamMCP`` (``adam_penalty.py``) reduced to the one code path
that works there (single tensor, no ``foreach``, no ``capturable``), with the MCP concavity ``b``
configurable and decoupled weight decay made explicit.

Per element and step ``t`` (reference doc section 4.3)::

    m ← β1·m + (1 − β1)·g            v ← β2·v + (1 − β2)·g²
    η = lr / (1 − β1^t)             D = √v / √(1 − β2^t) + eps
    θ̂ = θ − η·m / D                 τ = η·λ / D
    θ ← prox(θ̂, τ)

The Adam step is a gradient step in the metric ``diag(D/η)``, so the proximal map of the penalty
in that metric is an elementwise prox with threshold ``τ``. For L1 this is soft thresholding. For
MCP it is firm thresholding, which is the exact prox of the MCP ``ρ(x; λ=τ, γ=b)`` with unit
quadratic, i.e. the loss-scale MCP has concavity ``γ = b·η/D`` (the reference's choice, kept for
fidelity).
"""

import math
from numbers import Real

import torch
from torch import Tensor

from .errors import TisfmError

__all__ = ["prox_l1", "prox_mcp", "ProxAdam"]

PENALTIES = ("none", "l1", "mcp")
#: Penalties a regularization path can walk (a path without a penalty has nothing to vary).
PATH_PENALTIES = PENALTIES[1:]


def _soft_threshold(theta_hat, tau):
    """``max(|θ̂| − τ, 0)``; shared by both proxes, no validation (hot path)."""
    return (theta_hat.abs() - tau).clamp_(min=0)


def _prox_l1(theta_hat, tau):
    return torch.sign(theta_hat) * _soft_threshold(theta_hat, tau)


def _prox_mcp(theta_hat, tau, b):
    shrunk = _soft_threshold(theta_hat, tau).mul_(b / (b - 1.0))
    return torch.sign(theta_hat) * torch.minimum(shrunk, theta_hat.abs())


def _check_tau(tau):
    if isinstance(tau, Tensor):
        negative = bool((tau < 0).any())
    else:
        negative = not (isinstance(tau, Real) and tau >= 0)
    if negative:
        raise TisfmError(f"Proximal threshold tau must be a non-negative number or tensor, got {tau!r}.")


def prox_l1(theta_hat, tau):
    """Soft thresholding, the proximal map of ``τ·|x|``.

    Parameters
    ----------
    theta_hat : torch.Tensor
        Point to map, any shape.
    tau : float or torch.Tensor
        Non-negative threshold, a scalar or a tensor broadcastable to ``theta_hat``.

    Returns
    -------
    torch.Tensor
        ``sign(θ̂)·max(|θ̂| − τ, 0)``, same shape as ``theta_hat``.
    """
    _check_tau(tau)
    return _prox_l1(theta_hat, tau)


def prox_mcp(theta_hat, tau, b=3.0):
    """Firm thresholding, the proximal map of the minimax concave penalty.

    Returns ``argmin_x ½(x − θ̂)² + ρ(x; λ=τ, γ=b)`` with
    ``ρ(x; λ, γ) = λ|x| − x²/(2γ)`` for ``|x| ≤ γλ`` and ``γλ²/2`` beyond, which is
    0 for ``|θ̂| ≤ τ``, ``sign(θ̂)·b/(b−1)·(|θ̂| − τ)`` for ``τ < |θ̂| ≤ bτ`` and ``θ̂`` above.
    The objective is strictly convex for ``b > 1``, so the minimiser is unique.

    Parameters
    ----------
    theta_hat : torch.Tensor
        Point to map, any shape.
    tau : float or torch.Tensor
        Non-negative threshold, a scalar or a tensor broadcastable to ``theta_hat``.
    b : float, optional
        MCP concavity in units of ``τ``; must exceed 1. Default 3.0 (the reference's value).

    Returns
    -------
    torch.Tensor
        ``sign(θ̂)·min(b/(b−1)·max(|θ̂| − τ, 0), |θ̂|)``, same shape as ``theta_hat``.
    """
    _check_tau(tau)
    if not (isinstance(b, Real) and b > 1):
        raise TisfmError(f"MCP parameter b must be a number greater than 1, got {b!r}.")
    return _prox_mcp(theta_hat, tau, float(b))


def _check_group(group, index):
    """Raise TisfmError naming the first invalid option of param group ``index``."""
    where = f"param group {index}"

    def number(key, ok, expected):
        value = group[key]
        if isinstance(value, Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or not ok(value):
            raise TisfmError(f"Option {key!r} of {where} must be {expected}, got {group[key]!r}.")

    number("lr", lambda x: x >= 0, "a finite number >= 0")
    number("eps", lambda x: x >= 0, "a finite number >= 0")
    number("weight_decay", lambda x: x >= 0, "a finite number >= 0")
    number("lam", lambda x: x >= 0, "a finite number >= 0")
    number("mcp_b", lambda x: x > 1, "a finite number > 1")
    betas = group["betas"]
    if not (
        isinstance(betas, (tuple, list))
        and len(betas) == 2
        and all(isinstance(b, Real) and not isinstance(b, bool) and 0 <= b < 1 for b in betas)
    ):
        raise TisfmError(f"Option 'betas' of {where} must be two numbers in [0, 1), got {betas!r}.")
    if group["penalty"] not in PENALTIES:
        raise TisfmError(
            f"Option 'penalty' of {where} must be one of {', '.join(PENALTIES)}, got {group['penalty']!r}."
        )


class ProxAdam(torch.optim.Optimizer):
    """Adam with decoupled weight decay and an optional L1 / MCP proximal step.

    With ``penalty="none"`` (or ``lam=0``) this is exactly ``torch.optim.AdamW`` (and
    ``torch.optim.Adam`` when ``weight_decay=0``). Every option can be set per param group, e.g.
    ``[{"params": final_weight, "penalty": "mcp", "lam": 1e-3}, {"params": rest}]``.

    Parameters
    ----------
    params : iterable
        Parameters or param-group dicts.
    lr : float, optional
        Learning rate. Default 1e-3.
    betas : tuple of float, optional
        Moment decay rates ``(β1, β2)``, each in [0, 1). Default (0.9, 0.999).
    eps : float, optional
        Added to the denominator ``D``. Default 1e-8.
    weight_decay : float, optional
        Decoupled weight decay as in AdamW: ``θ ← θ·(1 − lr·wd)`` before the Adam update.
        Default 0.0.
    penalty : {"none", "l1", "mcp"}, optional
        Proximal penalty applied after the Adam update. Default "none".
    lam : float, optional
        Penalty strength ``λ >= 0``; the prox is skipped when 0. Default 0.0.
    mcp_b : float, optional
        MCP concavity ``b > 1`` (see :func:`prox_mcp`). Default 3.0.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 penalty="none", lam=0.0, mcp_b=3.0):
        params = list(params)
        if not params:
            raise TisfmError("ProxAdam got an empty parameter list; pass at least one tensor or param group.")
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                        penalty=penalty, lam=lam, mcp_b=mcp_b)
        super().__init__(params, defaults)

    def add_param_group(self, param_group):
        """Add a param group after validating its options (raises TisfmError)."""
        super().add_param_group(param_group)
        _check_group(self.param_groups[-1], len(self.param_groups) - 1)

    @torch.no_grad()
    def step(self, closure=None):
        """Perform one optimisation step.

        Parameters
        ----------
        closure : callable, optional
            Re-evaluates the model and returns the loss.

        Returns
        -------
        loss : float or None
            What ``closure`` returned, else None.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        for index, group in enumerate(self.param_groups):
            # Options may have been edited in place (schedulers, regularisation paths).
            _check_group(group, index)
            beta1, beta2 = group["betas"]
            lr, eps, wd = float(group["lr"]), float(group["eps"]), float(group["weight_decay"])
            lam, penalty, b = float(group["lam"]), group["penalty"], float(group["mcp_b"])
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                if grad.is_sparse or torch.is_complex(param):
                    raise TisfmError(
                        f"ProxAdam supports dense real parameters only; param group {index} has a "
                        f"{'sparse gradient' if grad.is_sparse else 'complex parameter'}."
                    )
                state = self.state[param]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                state["step"] += 1
                step = state["step"]
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]

                # Same operation order as torch's single-tensor Adam/AdamW so results match bitwise.
                if wd != 0:
                    param.mul_(1 - lr * wd)
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                step_size = lr / (1 - beta1**step)
                denom = (exp_avg_sq.sqrt() / (1 - beta2**step) ** 0.5).add_(eps)
                param.addcdiv_(exp_avg, denom, value=-step_size)

                if penalty != "none" and lam > 0:
                    tau = (step_size * lam) / denom
                    shrunk = _prox_l1(param, tau) if penalty == "l1" else _prox_mcp(param, tau, b)
                    param.copy_(shrunk)
        return loss
