"""MoCo pieces against closed forms: InfoNCE, queue wrap-around, momentum update (METHOD.md §6.1-6.3)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ikem_train.methods.moco import advance_pointer, check_queue_size, enqueue, info_nce, momentum_update, random_queue


def _orthonormal(n, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))[0][:n].float()


@pytest.mark.parametrize("temperature", [0.07, 0.25, 1.0])
def test_info_nce_aligned_keys_orthogonal_queue(temperature):
    # q = k and every queue column orthogonal to q: logits [1/T, 0, ..., 0]
    basis = _orthonormal(6, 6)
    q = basis[:2]  # two samples
    queue = basis[2:].T  # (6, 4): orthogonal to both queries
    loss = info_nce(q, q.clone(), queue, temperature)
    expected = math.log(1 + 4 * math.exp(-1 / temperature))
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)  # float32 logits


@pytest.mark.parametrize("s_neg", [-0.5, 0.0, 0.3, 1.0])
def test_info_nce_uniform_queue(s_neg):
    # Every negative has cosine s_neg with q: loss = log(1 + K exp((s_neg - 1)/T))
    t, k_size = 0.25, 8
    e = torch.eye(3)
    q = e[:1]  # (1, 3)
    neg = s_neg * e[0] + math.sqrt(1 - s_neg ** 2) * e[1]
    queue = neg.unsqueeze(1).repeat(1, k_size)  # (3, K) identical columns
    loss = info_nce(q, q, queue, t)
    assert loss.item() == pytest.approx(math.log(1 + k_size * math.exp((s_neg - 1) / t)), rel=1e-5, abs=1e-6)
    if s_neg == 1.0:  # positive indistinguishable from K negatives: log(K + 1)
        assert loss.item() == pytest.approx(math.log(k_size + 1), rel=1e-6)


def test_info_nce_logits_float32_under_bf16_autocast():
    torch.manual_seed(0)
    q = F.normalize(torch.randn(4, 16), dim=1)
    k = F.normalize(q + 0.1 * torch.randn(4, 16), dim=1)
    queue = random_queue(16, 64)
    ref = info_nce(q, k, queue, 0.07)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = info_nce(q, k, queue, 0.07)
        naive_logits = (q @ queue) / 0.07  # what autocast does to an unguarded matmul
    assert naive_logits.dtype == torch.bfloat16
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)


def test_info_nce_gradient_only_through_query():
    q = F.normalize(torch.randn(2, 4), dim=1).requires_grad_()
    k = F.normalize(torch.randn(2, 4), dim=1).requires_grad_()
    queue = random_queue(4, 8).requires_grad_()
    info_nce(q, k, queue, 0.2).backward()
    assert q.grad is not None and k.grad is None and queue.grad is None


def test_random_queue_unit_columns():
    queue = random_queue(8, 32)
    assert queue.shape == (8, 32) and queue.dtype == torch.float32
    torch.testing.assert_close(queue.norm(dim=0), torch.ones(32))


def test_queue_wraps_around():
    k_size, b, d = 8, 4, 2
    queue = torch.zeros(d, k_size)
    ptr = torch.zeros(1, dtype=torch.long)
    for step in range(3):  # writes columns 0-3, 4-7, then wraps to 0-3
        keys = torch.full((b, d), float(step + 1))
        keys[:, 1] = torch.arange(b) + 10 * (step + 1)
        enqueue(queue, keys, ptr)
        advance_pointer(ptr, b, k_size)
    assert int(ptr) == 4
    torch.testing.assert_close(queue[0], torch.tensor([3.0] * 4 + [2.0] * 4))
    torch.testing.assert_close(queue[1], torch.tensor([30.0, 31, 32, 33, 20, 21, 22, 23]))


def test_queue_size_must_divide_batch():
    check_queue_size(32, 8)
    with pytest.raises(ValueError, match="not divisible by the batch size 12"):
        check_queue_size(32, 12)


def test_momentum_update_arithmetic():
    query, key = nn.Linear(3, 2), nn.Linear(3, 2)
    with torch.no_grad():
        query.weight.fill_(1.0); query.bias.fill_(-2.0)
        key.weight.fill_(3.0); key.bias.fill_(4.0)
    momentum_update(key, query, 0.9)
    torch.testing.assert_close(key.weight, torch.full((2, 3), 0.9 * 3 + 0.1 * 1))
    torch.testing.assert_close(key.bias, torch.full((2,), 0.9 * 4 + 0.1 * -2))
    momentum_update(key, query, 0.0)  # m = 0 copies the query
    torch.testing.assert_close(key.weight, query.weight)
    torch.testing.assert_close(query.bias, torch.full((2,), -2.0))  # query untouched
