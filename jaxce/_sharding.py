"""Sharding helpers: manual mesh axes, replicated cotangents, Explicit meshes.

What the streamed and vocabulary-parallel losses need to run inside
`shard_map` or on an Explicit mesh. Imports only jax; the rule skeleton and
the family modules import it.
"""

from __future__ import annotations

from typing import Any

import jax
from jax import lax


def varying_axes(x: jax.Array) -> frozenset:
    """The manual mesh axes `x` varies over (inside `shard_map`; empty elsewhere)."""
    aval = jax.typeof(x)
    manual = getattr(aval, "manual_axis_type", None)
    return frozenset(manual.varying if manual is not None else getattr(aval, "vma", ()))


def varying_like(x: jax.Array, *refs: Any) -> jax.Array:
    """Marks a loop's initial carry as varying over the manual axes its inputs vary over."""
    missing = frozenset().union(*(varying_axes(r) for r in refs if r is not None))
    missing -= varying_axes(x)
    return lax.pcast(x, tuple(sorted(missing)), to="varying") if missing else x


def sum_over_replicas(ct: jax.Array, primal: jax.Array) -> jax.Array:
    """Sums a cotangent over the manual axes its primal is replicated along."""
    extra = varying_axes(ct) - varying_axes(primal)
    return lax.psum(ct, tuple(sorted(extra))) if extra else ct


def on_explicit_mesh(*arrays: Any) -> bool:
    """Whether any of `arrays` is typed with a sharding on a mesh with Explicit axes."""
    for x in arrays:
        mesh = getattr(getattr(jax.typeof(x), "sharding", None), "mesh", None)
        if mesh is not None and getattr(mesh, "explicit_axes", None):
            return True
    return False


def like_primal(ct: jax.Array, primal: Any) -> jax.Array:
    """A cotangent resharded to its primal's sharding on an Explicit mesh (a no-op elsewhere).

    Only reductions need it (a per-class weight's cotangent, summed over
    class-sharded examples, comes out sharded like the classes).
    """
    want = getattr(jax.typeof(primal), "sharding", None)
    have = getattr(jax.typeof(ct), "sharding", None)
    if want is None or have is None or not on_explicit_mesh(primal):
        return ct
    return ct if want.spec == have.spec else jax.reshard(ct, want)


def explicit_axes(x: jax.Array, dim: int) -> tuple[Any, tuple[str, ...] | None]:
    """The mesh and mesh axes that shard dimension `dim` of `x`, on an Explicit mesh."""
    sharding = jax.typeof(x).sharding
    spec = getattr(sharding, "spec", None)
    if spec is None or len(spec) <= dim or spec[dim] is None:
        return None, None
    axes = spec[dim] if isinstance(spec[dim], tuple) else (spec[dim],)
    return sharding.mesh, axes
