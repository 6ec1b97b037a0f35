"""Rendering continuous images: planes in world mm, image products, registration visuals, the cached lattice.

What ``medinr render``, the napari plugin and the benchmarks call; Qt-free. Values come from
:class:`medinr.continuous.ContinuousImage` (the one chunked evaluation): this package only decides where to
sample and how to show it.

- :mod:`~medinr.render.planes`: :class:`Plane`, :data:`PLANE_PRESETS`, default planes and pixel grids.
- :mod:`~medinr.render.products`: components (magnitude, phase, Jacobian ...), exact plane renders,
  volumes, the geometry that puts a rendered slice at its world position.
- :mod:`~medinr.render.deformation`: the deformed grid of a registration field.
- :mod:`~medinr.render.lattice`: the cached tier (evaluate once on a grid, interpolate any plane; cache files).
"""

from medinr.render.deformation import deformed_grid
from medinr.render.lattice import (
    CachedLattice,
    build_lattice,
    cache_path_for,
    cached_lattice_steps,
    load_lattice,
    plan_lattice,
    render_fast,
    save_lattice,
)
from medinr.render.planes import (
    CONVENTIONS,
    PLANE_PRESETS,
    Plane,
    default_plane,
    default_shape,
    fit_fov_to_shape,
    frame_from_normal,
    parse_plane_spec,
    plane_from_frame,
    preset_frame,
)
from medinr.render.products import (
    COMPONENTS,
    components_of,
    exact_blocks,
    render_plane,
    render_volume,
    resolve_component,
    slice_geometry,
    to_component,
    volume_geometry,
)

__all__ = [
    "COMPONENTS",
    "CONVENTIONS",
    "PLANE_PRESETS",
    "CachedLattice",
    "Plane",
    "build_lattice",
    "cache_path_for",
    "cached_lattice_steps",
    "components_of",
    "default_plane",
    "default_shape",
    "deformed_grid",
    "exact_blocks",
    "fit_fov_to_shape",
    "frame_from_normal",
    "load_lattice",
    "parse_plane_spec",
    "plan_lattice",
    "plane_from_frame",
    "preset_frame",
    "render_fast",
    "render_plane",
    "render_volume",
    "resolve_component",
    "save_lattice",
    "slice_geometry",
    "to_component",
    "volume_geometry",
]
