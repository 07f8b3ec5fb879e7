"""Quaternion helpers: golden values, matrix equivalences, numpy/torch agreement, gradients."""

import math

import numpy as np
import pytest
import torch

from easytune.core.motion.quaternion import (
    cont6d_to_matrix,
    cont6d_to_quat,
    matrix_to_cont6d,
    matrix_to_quat,
    qbetween,
    qfix,
    qinv,
    qmul,
    qnormalize,
    qrot,
    quat_to_cont6d,
    quat_to_matrix,
    yaw_quat,
)


def _random_quats(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return qnormalize(rng.normal(size=(n, 4)))


def test_golden_yaw_rotation():
    q = yaw_quat(np.array(math.pi / 2))  # +90 deg about +Y maps +Z to +X
    np.testing.assert_allclose(qrot(q, np.array([0.0, 0.0, 1.0])), [1.0, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(q, [math.sqrt(0.5), 0.0, math.sqrt(0.5), 0.0], atol=1e-12)
    np.testing.assert_allclose(
        quat_to_matrix(q), [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]], atol=1e-12
    )


def test_identity_cont6d_golden():
    np.testing.assert_allclose(quat_to_cont6d(np.array([1.0, 0.0, 0.0, 0.0])), [1, 0, 0, 0, 1, 0], atol=0)


def test_qmul_and_qrot_match_matrices():
    q, r = _random_quats(16, 1), _random_quats(16, 2)
    v = np.random.default_rng(3).normal(size=(16, 3))
    mq, mr = quat_to_matrix(q), quat_to_matrix(r)
    np.testing.assert_allclose(quat_to_matrix(qmul(q, r)), mq @ mr, atol=1e-12)
    np.testing.assert_allclose(qrot(q, v), np.einsum("nij,nj->ni", mq, v), atol=1e-12)
    np.testing.assert_allclose(qmul(q, qinv(q)), np.tile([1.0, 0, 0, 0], (16, 1)), atol=1e-12)
    # rotation matrices are orthonormal with det +1
    np.testing.assert_allclose(mq @ np.swapaxes(mq, -1, -2), np.broadcast_to(np.eye(3), mq.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(mq), 1.0, atol=1e-12)


def test_qrot_broadcasts_leading_dims():
    q = _random_quats(5, 4)  # (5, 4)
    v = np.random.default_rng(5).normal(size=(5, 7, 3))
    out = qrot(q[:, None], v)  # (5, 7, 3)
    loop = np.stack([qrot(np.repeat(q[i : i + 1], 7, 0), v[i]) for i in range(5)])
    np.testing.assert_allclose(out, loop, atol=1e-12)


def test_qbetween_maps_directions_including_degenerate_cases():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(32, 3)), rng.normal(size=(32, 3)) * 3.0
    q = qbetween(a, b)
    np.testing.assert_allclose(np.linalg.norm(q, axis=-1), 1.0, atol=1e-12)
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    np.testing.assert_allclose(qrot(q, unit(a)), unit(b), atol=1e-10)
    # parallel -> identity; opposite -> a defined half turn (the published version gives NaN)
    np.testing.assert_allclose(qbetween(np.array([0, 0, 2.0]), np.array([0, 0, 1.0])), [1, 0, 0, 0], atol=1e-12)
    for v in ([0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.3, -0.2, 0.9]):
        v = np.array(v)
        q = qbetween(v, -v)
        assert np.isfinite(q).all()
        np.testing.assert_allclose(qrot(q, unit(v)), -unit(v), atol=1e-10)
    qt = qbetween(torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64), torch.tensor([[0.0, -1.0, 0.0]]))
    assert torch.isfinite(qt).all()


def test_cont6d_round_trips():
    q = _random_quats(64, 7)
    m = quat_to_matrix(q)
    c = quat_to_cont6d(q)
    assert c.shape == (64, 6)
    np.testing.assert_allclose(c, np.concatenate([m[..., :, 0], m[..., :, 1]], -1), atol=0)
    np.testing.assert_allclose(cont6d_to_matrix(c), m, atol=1e-12)
    q_back = cont6d_to_quat(c)
    np.testing.assert_allclose(np.abs((q_back * q).sum(-1)), 1.0, atol=1e-12)  # same rotation up to sign
    np.testing.assert_allclose(matrix_to_cont6d(cont6d_to_matrix(c * 2.5)), c, atol=1e-12)  # Gram-Schmidt rescales
    np.testing.assert_allclose(quat_to_matrix(matrix_to_quat(m)), m, atol=1e-12)


def test_numpy_and_torch_agree():
    q, r = _random_quats(10, 8), _random_quats(10, 9)
    v = np.random.default_rng(10).normal(size=(10, 3))
    c = np.random.default_rng(11).normal(size=(10, 6))
    tq, tr, tv, tc = (torch.from_numpy(x) for x in (q, r, v, c))
    pairs = [
        (qmul(q, r), qmul(tq, tr)),
        (qrot(q, v), qrot(tq, tv)),
        (qinv(q), qinv(tq)),
        (qbetween(v, c[:, :3]), qbetween(tv, tc[:, :3])),
        (quat_to_matrix(q), quat_to_matrix(tq)),
        (quat_to_cont6d(q), quat_to_cont6d(tq)),
        (cont6d_to_matrix(c), cont6d_to_matrix(tc)),
        (matrix_to_quat(quat_to_matrix(q)), matrix_to_quat(quat_to_matrix(tq))),
        (yaw_quat(v[:, 0]), yaw_quat(tv[:, 0])),
    ]
    for a, b in pairs:
        assert isinstance(b, torch.Tensor) and b.dtype == torch.float64
        np.testing.assert_allclose(a, b.numpy(), atol=1e-12)


def test_torch_helpers_are_differentiable():
    q = torch.tensor(_random_quats(3, 12), requires_grad=True)
    v = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    c = torch.randn(3, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: qrot(qnormalize(a), b), (q, v))
    assert torch.autograd.gradcheck(lambda a: qmul(a, a.flip(0)), (q,))
    assert torch.autograd.gradcheck(cont6d_to_matrix, (c,))
    assert torch.autograd.gradcheck(lambda a, b: qbetween(a, b), (v, c[:, :3]))


def test_qfix_makes_sequence_continuous():
    q = _random_quats(6, 13)[:, None]  # (T, 1, 4)
    flipped = q * np.array([1, -1, 1, -1, -1, 1.0])[:, None, None]
    fixed = qfix(flipped)
    assert ((fixed[1:] * fixed[:-1]).sum(-1) >= 0).all()
    np.testing.assert_allclose(np.abs(fixed), np.abs(flipped))
    np.testing.assert_allclose(qfix(torch.from_numpy(flipped)).numpy(), fixed)


def test_wrong_shapes_raise():
    with pytest.raises(ValueError, match="q must have shape"):
        qrot(np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="cont6d"):
        cont6d_to_matrix(np.zeros((2, 5)))
