"""Typed family configs: every option of a model family with its type, range, units and a one-line doc, and the
family's defaults for each task.

A family declares a frozen dataclass, subclass of :class:`FamilyConfig`, with one :func:`option` field per
constructor argument (a test keeps the two in step), and names it as its ``config_type``. Everything else reads
the options from there: :func:`medinr.validation.check_options` (unknown names, types and ranges, before
anything is built), :meth:`FamilyConfig.for_task` (the defaults for an image fit, a k-space reconstruction or a
deformation), and the documentation (:meth:`FamilyConfig.describe`).

Why dataclasses and not pydantic: the core install has no pydantic (napari, which brings it, is an extra), the
checks must end in one line in medinr's words (pydantic's errors are multi-line reports), and a family's options
are a few flat fields that ``dataclasses.field(metadata=...)`` describes fully.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from medinr.errors import MedinrError

#: What a family can be fitted as: an image's intensities ('image', :func:`medinr.image_fit.fit_image`), a complex
#: image through k-space ('reconstruction', :mod:`medinr.mri.inr_recon`), a displacement field ('deformation',
#: :mod:`medinr.registration`).
TASKS = ("image", "reconstruction", "deformation")


@dataclass(frozen=True)
class TaskDefaults:
    """What a family starts from for a task.

    Attributes
    ----------
    options : dict
        Build options: the family's defaults for the task, the caller's options on top.
    lr : float
        Adam base rate for this task (families with parameter groups scale it per group).
    smoothness : float
        'image' task: weight of the prior between the voxels.
    prior : {'tv', 'curvature'}
        'image' task: that prior, total variation (edge-preserving, :func:`medinr.voxels.lattice_tv`) or curvature
        (:func:`medinr.voxels.smoothness_penalty`).
    point_batch : int or None
        'image' task, a family without a lattice path: random footprint points per step (None: the fit's own
        default, :data:`medinr.image_fit.POINT_BATCH`).
    compile_points : bool
        'image' task, a family without a lattice path: its training forward runs through ``torch.compile``
        (:class:`medinr.models.compile.CompiledForward`, eager if compiling fails).
    """

    options: dict[str, Any]
    lr: float
    smoothness: float = 0.0
    prior: str = "curvature"
    point_batch: int | None = None
    compile_points: bool = False


def option(default: Any, low: float | None = None, high: float | None = None, *, doc: str, units: str = "",
           low_open: bool = False, choices: Sequence[Any] | None = None, items: tuple[int, int] | None = None) -> Any:
    """A config field: ``default`` and what a value must be.

    Parameters
    ----------
    default
        The constructor's default (lists are copied per instance).
    low, high : float, optional
        Inclusive range of a number, or of every item of a list of numbers.
    doc : str
        One line: what the option does.
    units : str
        Units of the value ('voxels', 'cells per axis', 'x base lr', ...); empty for a plain count or factor.
    low_open : bool
        ``low`` itself is excluded (a strictly positive scale).
    choices : sequence, optional
        The values a string option may take.
    items : (int, int), optional
        Least and most items of a list option.
    """
    meta = {"low": low, "high": high, "doc": doc, "units": units, "low_open": low_open,
            "choices": None if choices is None else tuple(choices), "items": items}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class OptionSpec:
    """One option of a family as its config declares it (see :func:`option`)."""

    name: str
    type: Any
    default: Any
    doc: str
    units: str = ""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple[Any, ...] | None = None
    items: tuple[int, int] | None = None

    def range_text(self) -> str:
        """``[1, 65536]``, ``(0, 1000]``, ``>= 0``, or '' when any value of the type is accepted."""
        lo, hi = _number_text(self.low), _number_text(self.high)
        if self.low is not None and self.high is not None:
            return f"{'(' if self.low_open else '['}{lo}, {hi}]"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {lo}"
        return f"<= {hi}" if self.high is not None else ""

    def type_text(self) -> str:
        """The type as a reader writes it: ``int``, ``list[int] | None``."""
        return _type_name(self.type)


def _number_text(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is None:
        return "None" if hint is type(None) else getattr(hint, "__name__", str(hint))
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"


@dataclass(frozen=True)
class FamilyConfig:
    """Base of every family's typed config: the options (dataclass fields) and the defaults per task.

    A subclass sets :attr:`RATES` (the Adam base rate for each task) and :attr:`SMOOTHNESS`, and overrides
    :meth:`task_options` where the family's defaults depend on the task or the grid, and :meth:`check_values`
    for rules that tie options together (e.g. a hash grid's coarsest level not finer than its finest).
    """

    #: Adam base rate per task in :data:`TASKS`.
    RATES: ClassVar[dict[str, float]] = {}
    #: Weight of the prior between the voxels when the family is fitted to an image.
    SMOOTHNESS: ClassVar[float] = 0.0
    #: That prior: 'tv' (edge-preserving) or 'curvature'.
    PRIOR: ClassVar[str] = "curvature"
    #: Random footprint points per step of an image fit without a lattice path (None: the fit's default).
    POINT_BATCH: ClassVar[int | None] = None
    #: Whether such a fit compiles its training forward (worth it where the fit outlasts the 5-10 s compile by far):
    #: True, False, or the image dimensions where it does (e.g. ``(3,)``).
    COMPILE_POINTS: ClassVar[bool | tuple[int, ...]] = False

    @classmethod
    def specs(cls) -> dict[str, OptionSpec]:
        """Every option, in declaration order."""
        cached = cls.__dict__.get("_specs")
        if cached is None:
            hints = typing.get_type_hints(cls)
            cached = {}
            for f in dataclasses.fields(cls):
                default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
                m = f.metadata
                cached[f.name] = OptionSpec(f.name, hints[f.name], default, m.get("doc", ""), m.get("units", ""),
                                            m.get("low"), m.get("high"), m.get("low_open", False),
                                            m.get("choices"), m.get("items"))
            cls._specs = cached  # per class (read through cls.__dict__, never inherited)
        return cached

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """The constructor's defaults (fresh copies)."""
        return {name: copy.deepcopy(spec.default) for name, spec in cls.specs().items()}

    @classmethod
    def check_values(cls, values: Mapping[str, Any], prefix: str = "") -> None:
        """Rules between options, on the defaults with the given options on top (each already type-checked).

        Raise :class:`MedinrError` naming the options (with ``prefix``). Base: none.
        """

    @classmethod
    def task_options(cls, task: str, shape: tuple[int, ...], options: Mapping[str, Any]) -> dict[str, Any]:
        """The family's own options for ``task`` on grid ``shape`` (before the caller's ``options``, which a family
        may read to choose, e.g. a KAN's encoding). Base: none (the constructor's defaults)."""
        return {}

    @classmethod
    def for_task(cls, task: str, shape: Sequence[int], options: Mapping[str, Any] | None = None) -> TaskDefaults:
        """The defaults for ``task`` on grid ``shape``, with the caller's ``options`` on top.

        A dict-valued option (a KAN's ``encoding_options``) merges key by key. The options are not validated
        here: :func:`medinr.models.build_model` does that.
        """
        if task not in TASKS:
            raise MedinrError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")
        shape = tuple(int(n) for n in shape)
        if task != "deformation" and (len(shape) not in (2, 3) or min(shape) < 1):
            raise MedinrError(f"the {task} defaults need a 2D or 3D grid, got shape {shape}")
        given = dict(options or {})
        merged = cls.task_options(task, shape, given)
        for name, value in given.items():
            default = merged.get(name)
            merged[name] = {**default, **(value or {})} if isinstance(default, dict) and (
                value is None or isinstance(value, dict)) else value
        if task not in cls.RATES:
            raise MedinrError(f"{cls.__name__} states no learning rate for the {task} task")
        image = task == "image"
        compiles = cls.COMPILE_POINTS if isinstance(cls.COMPILE_POINTS, bool) else len(shape) in cls.COMPILE_POINTS
        return TaskDefaults(options=merged, lr=float(cls.RATES[task]),
                            smoothness=float(cls.SMOOTHNESS) if image else 0.0, prior=cls.PRIOR,
                            point_batch=cls.POINT_BATCH if image else None,
                            compile_points=compiles and image)

    @classmethod
    def describe(cls) -> list[dict[str, str]]:
        """One row per option (name, type, default, range, units, doc), for tables and ``--help`` texts."""
        return [{"name": s.name, "type": s.type_text(), "default": repr(s.default),
                 "range": s.range_text() or (", ".join(map(str, s.choices)) if s.choices else ""),
                 "units": s.units, "doc": s.doc} for s in cls.specs().values()]
