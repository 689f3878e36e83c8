"""CrosSCLR, IKEM and distillation losses on tiny tensors against values computed by hand
(METHOD.md §6.4, §7)."""

import math

import pytest
import torch
import torch.nn.functional as F

from ikem_train.methods.crossclr import cross_modal_losses, multi_positive_nce
from ikem_train.methods.distill import distill_loss
from ikem_train.methods.ikem import IKEMHead, concat_keys, concat_queues, ikem_loss

T = 0.5


def by_hand(logits, positives, temperature=T):
    """-(1/|P|) Σ_p log softmax(logits / T)_p with plain floats."""
    log_z = math.log(sum(math.exp(v / temperature) for v in logits))
    return log_z - sum(logits[p] for p in positives) / (len(positives) * temperature)


def unit_columns(cosines_with_e0):
    """(2, K) unit columns whose cosine with e0 is the given values (second coord >= 0)."""
    c = torch.tensor(cosines_with_e0, dtype=torch.float64)
    return torch.stack([c, (1 - c ** 2).sqrt()]).float()


E0 = torch.tensor([[1.0, 0.0]])
S_X = [0.6, 0.0, -0.8]   # q_x · Q_x
S_Y = [0.2, 0.9, -0.1]   # q_y · Q_y: top-1 neighbour is column 1


def test_multi_positive_nce_known_top1_neighbour():
    pos, sim, mine = torch.tensor([[1.0]]), torch.tensor([S_X]), torch.tensor([S_Y])
    ctx = [a * b for a, b in zip(S_X, S_Y)]
    # logits [π, s_x, s_x ⊙ s_y]; positives: own key (0), column 1 in the raw block (2) and context block (5)
    expected = by_hand([1.0] + S_X + ctx, [0, 2, 5])
    assert multi_positive_nce(pos, sim, mine, T).item() == pytest.approx(expected, rel=1e-6)
    # context off: [π, s_x] with positives 0 and 2
    got = multi_positive_nce(pos, sim, mine, T, context=False).item()
    assert got == pytest.approx(by_hand([1.0] + S_X, [0, 2]), rel=1e-6)
    # top-2: columns 1 and 0 of y's similarities
    got = multi_positive_nce(pos, sim, mine, T, topk=2).item()
    assert got == pytest.approx(by_hand([1.0] + S_X + ctx, [0, 1, 2, 4, 5]), rel=1e-6)


def test_cross_modal_losses_by_hand_two_modalities():
    q = {"joint": E0.clone().requires_grad_(), "motion": E0.clone().requires_grad_()}
    k = {"joint": E0.clone(), "motion": unit_columns([0.8]).T}  # π_motion = 0.8
    queues = {"joint": unit_columns(S_X), "motion": unit_columns(S_Y)}
    losses = cross_modal_losses(q, k, queues, T)
    ctx = [a * b for a, b in zip(S_X, S_Y)]
    # joint | motion: joint's logits, motion's top-1 (column 1)
    assert losses["joint"].item() == pytest.approx(by_hand([1.0] + S_X + ctx, [0, 2, 5]), rel=1e-5)
    # motion | joint: motion's logits, joint's top-1 (column 0)
    assert losses["motion"].item() == pytest.approx(by_hand([0.8] + S_Y + ctx, [0, 1, 4]), rel=1e-5)
    # the context term carries gradient into the partner's query too
    losses["joint"].backward()
    assert q["motion"].grad is not None and q["motion"].grad.abs().sum() > 0


def test_cross_modal_losses_average_over_partners():
    torch.manual_seed(0)
    names = ["joint", "motion", "bone"]
    q = {m: F.normalize(torch.randn(4, 8), dim=1) for m in names}
    k = {m: F.normalize(torch.randn(4, 8), dim=1) for m in names}
    queues = {m: F.normalize(torch.randn(8, 16), dim=0) for m in names}
    losses = cross_modal_losses(q, k, queues, 0.07)

    def pair(x, y):
        return multi_positive_nce((q[x] * k[x]).sum(1, keepdim=True), q[x] @ queues[x], q[y] @ queues[y], 0.07)

    for x in names:
        expected = torch.stack([pair(x, y) for y in names if y != x]).mean(0).mean()
        torch.testing.assert_close(losses[x], expected)


def test_ikem_concatenated_key_by_hand():
    # two modalities of D = 2, K = 2
    k1, k2 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    kappa = concat_keys([k1, k2])
    torch.testing.assert_close(kappa, torch.tensor([[1.0, 0.0, 0.0, 1.0]]) / math.sqrt(2))
    q1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # columns e0, e1
    q2 = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # columns e1, e0
    joint_queue = concat_queues([q1, q2])
    torch.testing.assert_close(joint_queue, torch.tensor([[1.0, 0], [0, 1], [0, 1], [1, 0]]) / math.sqrt(2))
    u = torch.tensor([[3.0, 0.0, 0.0, 0.0]], requires_grad=True)  # normalised inside: e0
    a = 1 / math.sqrt(2)  # û·κ = û·Q̄_0 = 1/√2, û·Q̄_1 = 0
    loss = ikem_loss(u, kappa, joint_queue, T)
    assert loss.item() == pytest.approx(by_hand([a, a, 0.0], [0]), rel=1e-6)
    loss.backward()
    assert u.grad is not None


def test_ikem_head_shapes():
    head = IKEMHead(256, 768)
    assert head(torch.randn(5, 256)).shape == (5, 768)
    assert [tuple(p.shape) for p in head.parameters()] == [(768, 256), (768,), (768, 768), (768,)]


def test_distill_loss_by_hand():
    rho = [0.6, 0.0, -0.8]          # z · Q_T
    sigma_a = [0.1, 0.5, 0.2]       # teacher modality a: top-1 column 1
    sigma_b = [0.9, 0.0, 0.3]       # teacher modality b: top-1 column 0
    z = E0.clone().requires_grad_()
    t = E0.clone()                  # π = 1
    sigmas = [torch.tensor([sigma_a], requires_grad=True), torch.tensor([sigma_b])]
    loss = distill_loss(z, t, unit_columns(rho), sigmas, T)
    l_a = by_hand([1.0] + rho + [s * r for s, r in zip(sigma_a, rho)], [0, 2, 5])
    l_b = by_hand([1.0] + rho + [s * r for s, r in zip(sigma_b, rho)], [0, 1, 4])
    assert loss.item() == pytest.approx((l_a + l_b) / 2, rel=1e-5)
    loss.backward()
    assert z.grad is not None and sigmas[0].grad is None  # only the student gets gradient
    # without context: [π, ρ] and the mined raw positive only
    loss = distill_loss(z, t, unit_columns(rho), sigmas, T, context=False)
    expected = (by_hand([1.0] + rho, [0, 2]) + by_hand([1.0] + rho, [0, 1])) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_losses_float32_under_bf16_autocast():
    torch.manual_seed(1)
    q = {m: F.normalize(torch.randn(4, 8), dim=1) for m in ("joint", "bone")}
    queues = {m: F.normalize(torch.randn(8, 16), dim=0) for m in q}
    ref = cross_modal_losses(q, q, queues, 0.07)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = cross_modal_losses(q, q, queues, 0.07)
    for m in q:
        assert got[m].dtype == torch.float32
        torch.testing.assert_close(got[m], ref[m], rtol=1e-6, atol=1e-6)
