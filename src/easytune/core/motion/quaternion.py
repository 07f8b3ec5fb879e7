"""Quaternion and rotation helpers for numpy arrays and torch tensors.

Quaternions are ``(..., 4)`` in (w, x, y, z) order, Hamilton product, unit length where a rotation is meant.
Every function accepts either a ``numpy.ndarray`` (returns numpy) or a ``torch.Tensor`` (returns torch, batched
over any leading dims, differentiable, no in-place writes). Leading dims broadcast.

The continuous 6D rotation representation is the one HumanML3D publishes: the first two columns of the rotation
matrix concatenated, ``(m00, m10, m20, m01, m11, m21)``; the inverse is Gram-Schmidt (Zhou et al. 2019).
"""

from __future__ import annotations

import numpy as np
import torch

Array = np.ndarray | torch.Tensor

_EPS = 1e-12


def _is_torch(x: Array) -> bool:
    return isinstance(x, torch.Tensor)


def _stack(items: list, like: Array, axis: int = -1) -> Array:
    return torch.stack(items, dim=axis) if _is_torch(like) else np.stack(items, axis=axis)


def _cat(items: list, like: Array, axis: int = -1) -> Array:
    return torch.cat(items, dim=axis) if _is_torch(like) else np.concatenate(items, axis=axis)


def _cross(a: Array, b: Array) -> Array:
    if _is_torch(a) or _is_torch(b):
        a, b = torch.broadcast_tensors(torch.as_tensor(a), torch.as_tensor(b))
        return torch.linalg.cross(a, b, dim=-1)
    return np.cross(a, b, axis=-1)


def _norm(x: Array) -> Array:
    """Euclidean norm over the last axis, keeping it: (..., 1)."""
    if _is_torch(x):
        return torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    return np.linalg.norm(x, axis=-1, keepdims=True)


def _dot(a: Array, b: Array) -> Array:
    """Dot product over the last axis, keeping it: (..., 1)."""
    return (a * b).sum(-1, keepdim=True) if _is_torch(a) else (a * b).sum(-1, keepdims=True)


def _check_last(x: Array, n: int, what: str) -> None:
    if x.shape[-1] != n:
        raise ValueError(f"{what} must have shape (..., {n}); got {tuple(x.shape)}")


def _as_like(x: Array, like: Array) -> Array:
    """``x`` converted to the array type (and for torch, dtype/device) of ``like``."""
    if _is_torch(like):
        return torch.as_tensor(x, dtype=like.dtype, device=like.device)
    return np.asarray(x, dtype=np.result_type(like, np.float32))


def qnormalize(q: Array) -> Array:
    """Unit quaternions (..., 4)."""
    _check_last(q, 4, "q")
    n = _norm(q)
    return q / (n.clamp_min(_EPS) if _is_torch(n) else np.maximum(n, _EPS))


def qinv(q: Array) -> Array:
    """Inverse of unit quaternions (conjugate): (..., 4) -> (..., 4)."""
    _check_last(q, 4, "q")
    sign = _as_like(np.array([1.0, -1.0, -1.0, -1.0]), q)
    return q * sign


def qmul(q: Array, r: Array) -> Array:
    """Hamilton product ``q * r`` (apply r first, then q): (..., 4) x (..., 4) -> (..., 4)."""
    _check_last(q, 4, "q")
    _check_last(r, 4, "r")
    if _is_torch(q) or _is_torch(r):
        like = q if _is_torch(q) else r
        q, r = _as_like(q, like), _as_like(r, like)
    w1, x1, y1, z1 = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    w2, x2, y2, z2 = r[..., 0], r[..., 1], r[..., 2], r[..., 3]
    w = w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2
    x = w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2
    y = w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2
    z = w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2
    return _stack([w, x, y, z], like=w)


def qrot(q: Array, v: Array) -> Array:
    """Rotate vectors ``v`` (..., 3) by unit quaternions ``q`` (..., 4); leading dims broadcast."""
    _check_last(q, 4, "q")
    _check_last(v, 3, "v")
    if _is_torch(q) or _is_torch(v):
        like = q if _is_torch(q) else v
        q, v = _as_like(q, like), _as_like(v, like)
    qvec = q[..., 1:]
    uv = _cross(qvec, v)  # (..., 3)
    uuv = _cross(qvec, uv)  # (..., 3)
    return v + 2.0 * (q[..., :1] * uv + uuv)


def qbetween(v0: Array, v1: Array) -> Array:
    """Shortest-arc unit quaternion rotating direction ``v0`` onto ``v1``: (..., 3) x (..., 3) -> (..., 4).

    Same construction as the published HumanML3D ``qbetween`` (w = |v0||v1| + v0.v1, xyz = v0 x v1, normalised),
    plus a defined answer for opposite vectors (a half turn about an axis orthogonal to ``v0``) where the
    published one returns NaN.
    """
    _check_last(v0, 3, "v0")
    _check_last(v1, 3, "v1")
    if _is_torch(v0) or _is_torch(v1):
        like = v0 if _is_torch(v0) else v1
        v0, v1 = _as_like(v0, like), _as_like(v1, like)
        v0, v1 = torch.broadcast_tensors(v0, v1)
    else:
        v0, v1 = np.broadcast_arrays(np.asarray(v0, dtype=float), np.asarray(v1, dtype=float))
    n0n1 = _norm(v0) * _norm(v1)  # (..., 1)
    w = n0n1 + _dot(v0, v1)  # (..., 1)
    q = _cat([w, _cross(v0, v1)], like=v0)  # (..., 4)
    qn = _norm(q)
    opposite = qn <= 1e-7 * (n0n1 + _EPS)  # (..., 1)
    # Half turn about an axis orthogonal to v0 (cross with X, or with Y when v0 is along X).
    ex = _as_like(np.array([1.0, 0.0, 0.0]), v0)
    ey = _as_like(np.array([0.0, 1.0, 0.0]), v0)
    axis = _cross(v0, ex)
    if _is_torch(axis):
        axis = torch.where(_norm(axis) > 1e-6 * _norm(v0).clamp_min(_EPS), axis, _cross(v0, ey))
        half_turn = torch.cat([torch.zeros_like(w), axis], dim=-1)
        q = torch.where(opposite, half_turn, q)
        return qnormalize(q)
    axis = np.where(_norm(axis) > 1e-6 * np.maximum(_norm(v0), _EPS), axis, _cross(v0, ey))
    half_turn = np.concatenate([np.zeros_like(w), axis], axis=-1)
    q = np.where(opposite, half_turn, q)
    return qnormalize(q)


def qfix(q: Array) -> Array:
    """Flip signs along axis 0 (time) so consecutive quaternions have a non-negative dot product: (T, ..., 4)."""
    _check_last(q, 4, "q")
    if _is_torch(q):
        dots = (q[1:] * q[:-1]).sum(-1)  # (T-1, ...)
        flips = torch.cumsum((dots < 0).to(torch.int64), dim=0) % 2
        sign = torch.cat([torch.ones_like(flips[:1]), 1 - 2 * flips], dim=0).to(q.dtype)
        return q * sign[..., None]
    dots = (q[1:] * q[:-1]).sum(-1)
    flips = np.cumsum(dots < 0, axis=0) % 2
    sign = np.concatenate([np.ones_like(flips[:1]), 1 - 2 * flips], axis=0).astype(q.dtype)
    return q * sign[..., None]


def quat_to_matrix(q: Array) -> Array:
    """Rotation matrices (..., 3, 3) of quaternions (..., 4) (need not be unit length)."""
    _check_last(q, 4, "q")
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    two_s = 2.0 / (q * q).sum(-1)
    rows = [
        1 - two_s * (y * y + z * z), two_s * (x * y - z * w), two_s * (x * z + y * w),
        two_s * (x * y + z * w), 1 - two_s * (x * x + z * z), two_s * (y * z - x * w),
        two_s * (x * z - y * w), two_s * (y * z + x * w), 1 - two_s * (x * x + y * y),
    ]
    m = _stack(rows, like=w)  # (..., 9)
    return m.reshape(tuple(q.shape[:-1]) + (3, 3))


def matrix_to_quat(m: Array) -> Array:
    """Unit quaternions (..., 4) with w >= 0 from rotation matrices (..., 3, 3) (branch-free, stable)."""
    if tuple(m.shape[-2:]) != (3, 3):
        raise ValueError(f"m must have shape (..., 3, 3); got {tuple(m.shape)}")
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    if _is_torch(m):
        def sqrt_pos(a):
            return torch.sqrt(torch.clamp(a, min=0.0))
        copysign = torch.copysign
    else:
        def sqrt_pos(a):
            return np.sqrt(np.maximum(a, 0.0))
        copysign = np.copysign
    w = 0.5 * sqrt_pos(1 + m00 + m11 + m22)
    x = 0.5 * sqrt_pos(1 + m00 - m11 - m22)
    y = 0.5 * sqrt_pos(1 - m00 + m11 - m22)
    z = 0.5 * sqrt_pos(1 - m00 - m11 + m22)
    x = copysign(x, m[..., 2, 1] - m[..., 1, 2])
    y = copysign(y, m[..., 0, 2] - m[..., 2, 0])
    z = copysign(z, m[..., 1, 0] - m[..., 0, 1])
    return qnormalize(_stack([w, x, y, z], like=w))


def matrix_to_cont6d(m: Array) -> Array:
    """Continuous 6D (..., 6): first two columns of the rotation matrix (..., 3, 3), as published."""
    if tuple(m.shape[-2:]) != (3, 3):
        raise ValueError(f"m must have shape (..., 3, 3); got {tuple(m.shape)}")
    return _cat([m[..., :, 0], m[..., :, 1]], like=m)


def quat_to_cont6d(q: Array) -> Array:
    """Continuous 6D (..., 6) of quaternions (..., 4)."""
    return matrix_to_cont6d(quat_to_matrix(q))


def cont6d_to_matrix(c: Array) -> Array:
    """Rotation matrices (..., 3, 3) from 6D (..., 6) by Gram-Schmidt: x = a1/|a1|, z = x X a2 normalised, y = z X x."""
    _check_last(c, 6, "cont6d")
    x = c[..., 0:3]
    x = x / (_norm(x).clamp_min(_EPS) if _is_torch(x) else np.maximum(_norm(x), _EPS))
    z = _cross(x, c[..., 3:6])
    z = z / (_norm(z).clamp_min(_EPS) if _is_torch(z) else np.maximum(_norm(z), _EPS))
    y = _cross(z, x)
    return _stack([x, y, z], like=x, axis=-1)  # columns (..., 3, 3)


def cont6d_to_quat(c: Array) -> Array:
    """Unit quaternions (..., 4) from 6D (..., 6)."""
    return matrix_to_quat(cont6d_to_matrix(c))


def yaw_quat(angle: Array) -> Array:
    """Unit quaternions (..., 4) of rotations by ``angle`` (...,) radians about +Y."""
    half = 0.5 * angle
    if _is_torch(angle):
        zero = torch.zeros_like(half)
        return torch.stack([torch.cos(half), zero, torch.sin(half), zero], dim=-1)
    half = np.asarray(half, dtype=float)
    zero = np.zeros_like(half)
    return np.stack([np.cos(half), zero, np.sin(half), zero], axis=-1)
