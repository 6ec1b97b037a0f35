"""Adam for the training loop: the update of ``torch.optim.Adam`` with its defaults, without ``torch.optim``.

``torch.optim.Optimizer`` imports ``torch._dynamo`` on its first use (its methods are wrapped to be skipped by
the compiler), which costs 1.4-1.5 s of every command on a 2-core machine: a tenth of a registration. The
loop needs only plain Adam with per-group learning rates, so it keeps that update here, step for step the
arithmetic of ``torch.optim.Adam(betas=(0.9, 0.999), eps=1e-8)``'s single-tensor path (``tests/test_training``
checks it against torch's to the bit). The one departure: a parameter trained by block (a volume's tile reached
a block of a feature grid, :mod:`medinr.training.blocks`) steps that block alone, without the first moment.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

BETAS = (0.9, 0.999)
EPS = 1e-8


class Adam:
    """Adam on parameter groups (``{"params": [...], "lr": float}``; a group without ``"lr"`` takes ``lr``) or
    on plain parameters (one group).

    ``step(factor)`` applies one update at learning rate ``group lr x factor`` (the schedule's multiplier).
    ``state`` maps a parameter to its moments and step count, so a rebuilt optimiser can carry them over
    (:meth:`carry_state`).
    """

    def __init__(self, groups: Iterable[dict] | Iterable[torch.Tensor], lr: float) -> None:
        items = list(groups)
        if items and not isinstance(items[0], dict):  # plain parameters: one group, as torch.optim takes them
            items = [{"params": items}]
        self.param_groups = [{"params": list(g["params"]), "lr": float(g.get("lr", lr))} for g in items]
        if not self.param_groups:
            raise ValueError("Adam got an empty parameter list")
        self.state: dict[torch.Tensor, dict[str, torch.Tensor | int]] = {}

    def carry_state(self, previous: "Adam") -> None:
        """Take ``previous``'s moments for every parameter both optimise."""
        for group in self.param_groups:
            for p in group["params"]:
                if p in previous.state:
                    self.state[p] = previous.state[p]

    def zero_grad(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    def _state(self, p: torch.Tensor, first_moment: bool = True) -> dict:
        state = self.state.get(p)
        if state is None:
            state = self.state[p] = {"step": 0, "exp_avg_sq": torch.zeros_like(p)}
        if first_moment and "exp_avg" not in state:
            state["exp_avg"] = torch.zeros_like(p)
        state["step"] += 1
        return state

    @torch.no_grad()
    def step(self, factor: float = 1.0, blocks: Sequence[tuple[torch.Tensor, tuple, torch.Tensor]] = ()) -> None:
        """One update; ``blocks``: ``(param, box, gradient of p[box])`` of parameters trained by block
        (:mod:`medinr.training.blocks`): only ``p[box]`` and its moments change."""
        block_of = {id(p): (box, grad) for p, box, grad in blocks}
        for group in self.param_groups:
            lr = group["lr"] * factor
            batches: dict[tuple, list[torch.Tensor]] = {}
            for p in group["params"]:
                if id(p) in block_of:
                    if p.grad is not None:  # a block's step would drop the dense gradient
                        raise RuntimeError("a parameter got both a dense gradient and a block's in one step")
                    box, grad = block_of[id(p)]
                    state = self._state(p, first_moment=False)
                    _block_update(p[box], grad, state["exp_avg_sq"][box], state["step"], lr)
                    continue
                if p.grad is None:
                    continue
                state = self._state(p)
                if fusable(p):
                    batches.setdefault((p.device, p.dtype), []).append(p)
                else:
                    _update(p, p.grad, state["exp_avg"], state["exp_avg_sq"], state["step"], lr)
            for params in batches.values():
                self._fused(params, lr)

    def _fused(self, params: list[torch.Tensor], lr: float) -> None:
        """One call of torch's fused kernel for parameters of one device and dtype."""
        states = [self.state[p] for p in params]
        steps = [torch.tensor(float(s["step"]), dtype=torch.float32, device=p.device) for p, s in zip(params, states)]
        torch._fused_adam_(params, [p.grad for p in params], [s["exp_avg"] for s in states],
                           [s["exp_avg_sq"] for s in states], [], steps, lr=lr, beta1=BETAS[0], beta2=BETAS[1],
                           weight_decay=0.0, eps=EPS, amsgrad=False, maximize=False)


def _update(p: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor, step: int,
            lr: float) -> None:
    """Adam's update in place, the arithmetic of torch's single-tensor path."""
    beta1, beta2 = BETAS
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    step_size = lr / (1 - beta1**step)
    denom = (exp_avg_sq.sqrt() / (1 - beta2**step) ** 0.5).add_(EPS)
    p.addcdiv_(exp_avg, denom, value=-step_size)


def _block_update(p: torch.Tensor, grad: torch.Tensor, exp_avg_sq: torch.Tensor, step: int, lr: float) -> None:
    """The update of a block (views of a parameter and its second moment): Adam without the first moment.

    A tile reaches a block about once every 60 steps. Under dense Adam its momentum then kept moving the block for
    the next ten or so steps, zero gradient or not, by ``grad / sqrt(v)`` in all; a lazy update with momentum moves
    it by a tenth of that once (a 128^3 volume fitted that way: 31.6 dB instead of 39.9). Without it the block
    moves by the whole of it at once: 40.0 dB.
    """
    beta2 = BETAS[1]
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    denom = (exp_avg_sq.sqrt() / (1 - beta2**step) ** 0.5).add_(EPS)
    p.addcdiv_(grad, denom, value=-lr)


#: Devices whose fused Adam kernel torch has (``torch.optim``'s list, without importing it).
FUSED_DEVICES = ("cpu", "cuda")


def fusable(p: torch.Tensor) -> bool:
    """True when torch's fused kernel updates ``p``: a dense floating-point tensor (and gradient, laid out
    alike) on a device that has the kernel."""
    g = p.grad
    return (hasattr(torch, "_fused_adam_") and p.device.type in FUSED_DEVICES and p.is_floating_point()
            and not p.is_sparse and g is not None and not g.is_sparse and g.dtype == p.dtype
            and g.stride() == p.stride())

