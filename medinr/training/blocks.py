"""Block updates: a step that reaches a block of a feature lattice trains that block alone.

A volume too large for one step trains on tiles (:mod:`medinr.image_fit`). A tile reaches only a block of each
level of a dense feature grid (``mrgrid``, the KAN's grid encoding: ``INR.block_updates``), yet the narrowing's backward
pass made a gradient the size of the whole lattice, zero outside the block, and Adam stepped every node. For the
whole 1 mm MNI head (55 M parameters) the two took 40 of a step's 80 ms.

Inside :func:`recording`, :func:`take_block` (the narrowing of
:func:`~medinr.models.separable.interpolate_axes`) hands out a leaf tensor that views the block instead of a
narrowed view of the parameter: the backward pass leaves the block's gradient on that leaf and none on the
parameter, and :meth:`medinr.training.adam.Adam.step` then steps that block only. Nodes a step does not reach
keep their value and Adam moments until a step reaches them again (lazy Adam, as ``torch.optim.SparseAdam``;
instant-NGP skips the Adam steps of hash-table entries whose gradient is zero for the same reason).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

_ACTIVE = threading.local()


@dataclass
class Block:
    """The part ``box`` (one slice per axis) of ``param`` that a step reached, and its leaf."""

    param: torch.Tensor
    box: tuple[slice, ...]
    leaf: torch.Tensor


@dataclass
class BlockRecorder:
    """The blocks handed out during one step, each parameter's merged into one (:meth:`merged`)."""

    blocks: list[Block] = field(default_factory=list)

    def take(self, param: torch.Tensor, box: tuple[slice, ...]) -> torch.Tensor:
        leaf = param.detach()[box].requires_grad_(True)
        self.blocks.append(Block(param, box, leaf))
        return leaf

    def merged(self) -> list[tuple[torch.Tensor, tuple[slice, ...], torch.Tensor]]:
        """``(param, box, gradient of the box)`` per parameter that received a gradient: a parameter taken twice
        in one step gets the box that holds both, with both gradients added in."""
        by_param: dict[int, list[Block]] = {}
        for block in self.blocks:
            if block.leaf.grad is not None:
                by_param.setdefault(id(block.param), []).append(block)
        out = []
        for blocks in by_param.values():
            param = blocks[0].param
            if len(blocks) == 1:
                out.append((param, blocks[0].box, blocks[0].leaf.grad))
                continue
            box = tuple(slice(min(b.box[a].start for b in blocks), max(b.box[a].stop for b in blocks))
                        for a in range(param.dim()))
            grad = param.new_zeros([s.stop - s.start for s in box])
            for b in blocks:
                grad[tuple(slice(s.start - u.start, s.stop - u.start) for s, u in zip(b.box, box))] += b.leaf.grad
            out.append((param, box, grad))
        return out


@contextmanager
def recording() -> Iterator[BlockRecorder]:
    """Parameters narrowed by :func:`take_block` in this thread within the block train as blocks."""
    previous = getattr(_ACTIVE, "recorder", None)
    _ACTIVE.recorder = recorder = BlockRecorder()
    try:
        yield recorder
    finally:
        _ACTIVE.recorder = previous


def take_block(values: torch.Tensor, extents: Sequence[tuple[int, int]]) -> torch.Tensor:
    """``values (C, n_0, ...)`` narrowed to ``extents`` (``(first, length)`` per lattice axis). While
    :func:`recording`, a parameter with a gradient to compute gives a block leaf instead (module docstring)."""
    recorder = getattr(_ACTIVE, "recorder", None)
    if recorder is not None and isinstance(values, torch.nn.Parameter) and values.requires_grad \
            and torch.is_grad_enabled():
        return recorder.take(values, (slice(0, values.shape[0]),) + tuple(slice(a, a + n) for a, n in extents))
    for axis, (first, length) in enumerate(extents):
        if first > 0 or length < values.shape[axis + 1]:
            values = values.narrow(axis + 1, first, length)
    return values
