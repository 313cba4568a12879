"""The contrastive (eq. 1) and DDM (eqs. 3-4) losses against a float64 numpy reference."""

import numpy as np
import pytest
import torch

from pretrain.builder import contrastive_loss, ddm_loss


def unit_rows(rng, n, dim=16):
    x = rng.standard_normal((n, dim))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def reference_contrastive(query, bank, positive, tau):
    """Eq. 1: -1/|B| sum_i log exp(sim(z'_i, z_i)/tau) / sum_over_bank exp(sim(z'_i, z)/tau)."""
    total = 0.0
    for i, q in enumerate(query):
        sims = np.array([q @ z for z in bank])  # eq. 2 on unit vectors
        total -= np.log(np.exp(sims[positive[i]] / tau) / np.exp(sims / tau).sum())
    return total / len(query)


def reference_ddm(weak, strong, bank, t_ddm):
    """Eq. 4 with eq. 3's distributions: -1/|B| sum_i sum_k p(z_k|z'_i) log p(z_k|z''_i)."""
    total = 0.0
    for w, s in zip(weak, strong):
        p_weak = np.exp(bank @ w / t_ddm) / np.exp(bank @ w / t_ddm).sum()
        p_strong = np.exp(bank @ s / t_ddm) / np.exp(bank @ s / t_ddm).sum()
        total -= (p_weak * np.log(p_strong)).sum()
    return total / len(weak)


@pytest.fixture
def case():
    rng = np.random.default_rng(0)
    n, bank_size = 6, 6 + 24  # 6 queries; bank = 6 batch keys then a queue of 24
    return {
        "bank": unit_rows(rng, bank_size),
        "weak": [unit_rows(rng, n) for _ in range(5)],
        "strong": [unit_rows(rng, n) for _ in range(5)],
        "n": n,
    }


def sims(queries, bank):
    return torch.from_numpy(queries) @ torch.from_numpy(bank).T


def test_contrastive_loss_equals_eq1(case):
    bank, q = case["bank"], case["weak"][0]
    positive = np.arange(case["n"])
    loss = contrastive_loss(sims(q, bank) / 0.2, torch.from_numpy(positive))
    assert loss.item() == pytest.approx(reference_contrastive(q, bank, positive, 0.2), rel=1e-6)


def test_contrastive_loss_uses_the_given_positive_column(case):
    """A label offset (e.g. global rank * N) changes the loss: the positive is not always column i."""
    bank, q = case["bank"], case["weak"][0]
    shifted = np.arange(case["n"]) + 3
    loss = contrastive_loss(sims(q, bank) / 0.2, torch.from_numpy(shifted))
    assert loss.item() == pytest.approx(reference_contrastive(q, bank, shifted, 0.2), rel=1e-6)
    assert loss.item() != pytest.approx(reference_contrastive(q, bank, np.arange(case["n"]), 0.2), rel=1e-3)


@pytest.mark.parametrize("t_ddm", [0.2, 0.5])
def test_ddm_loss_equals_eq4(case, t_ddm):
    bank, w, s = case["bank"], case["weak"][0], case["strong"][0]
    loss = ddm_loss([sims(w, bank)], [sims(s, bank)], t_ddm)
    assert loss.item() == pytest.approx(reference_ddm(w, s, bank, t_ddm), rel=1e-6)


def test_ddm_target_is_the_contrastive_logits_rescaled_by_t_over_t_ddm(case):
    """The reference code's form, softmax(weak_logits * T / T_ddm) with weak_logits = sim / T, is the same
    target."""
    bank, w, s = case["bank"], case["weak"][0], case["strong"][0]
    t, t_ddm = 0.2, 0.3
    weak_logits = sims(w, bank) / t
    target = torch.softmax(weak_logits * t / t_ddm, dim=1)
    explicit = -(target * torch.log_softmax(sims(s, bank) / t_ddm, dim=1)).sum(1).mean()
    assert ddm_loss([sims(w, bank)], [sims(s, bank)], t_ddm).item() == pytest.approx(explicit.item(), rel=1e-12)


def test_multi_ddm_factorisation_equals_the_explicit_25_pair_sum(case):
    bank = case["bank"]
    weak = [sims(w, bank) for w in case["weak"]]
    strong = [sims(s, bank) for s in case["strong"]]
    pairs = sum(reference_ddm(w, s, bank, 0.2) for w in case["weak"] for s in case["strong"])
    assert ddm_loss(weak, strong, 0.2).item() == pytest.approx(pairs, rel=1e-6)


def test_ddm_target_is_detached(case):
    bank = case["bank"]
    weak = sims(case["weak"][0], bank).requires_grad_()
    strong = sims(case["strong"][0], bank).requires_grad_()
    ddm_loss([weak], [strong], 0.2).backward()
    assert weak.grad is None and strong.grad.abs().sum() > 0


def test_ddm_loss_is_finite_at_low_temperature_where_log_of_softmax_is_not(case):
    bank = torch.from_numpy(case["bank"]).float()
    weak = torch.from_numpy(case["weak"][0]).float() @ bank.T
    strong = torch.from_numpy(case["strong"][0]).float() @ bank.T
    assert torch.isfinite(ddm_loss([weak], [strong], 0.01))
    naive = -(torch.softmax(weak / 0.01, 1) * torch.log(torch.softmax(strong / 0.01, 1))).sum(1).mean()
    assert not torch.isfinite(naive)  # what the reference implementation computes


@pytest.mark.parametrize("t_ddm", [0.2, 0.01])
def test_losses_are_finite_in_bfloat16(case, t_ddm):
    bank = torch.from_numpy(case["bank"]).bfloat16()
    weak = torch.from_numpy(case["weak"][0]).bfloat16() @ bank.T
    strong = torch.from_numpy(case["strong"][0]).bfloat16() @ bank.T
    assert torch.isfinite(ddm_loss([weak], [strong], t_ddm))
    assert torch.isfinite(contrastive_loss(weak / t_ddm, torch.arange(case["n"])))
    full = ddm_loss([weak.double()], [strong.double()], t_ddm)
    assert ddm_loss([weak], [strong], t_ddm).double().item() == pytest.approx(full.item(), rel=0.05)
