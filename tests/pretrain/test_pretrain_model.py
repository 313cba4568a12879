"""The CLSA module: bank layout and losses, gradient flow, momentum update, queue."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pretrain.builder import CLSA


def tiny_model(**kwargs):
    torch.manual_seed(0)
    return CLSA("resnet18", dim=16, mlp_hidden=32, queue_size=kwargs.pop("queue_size", 16), **kwargs)


def views(n=4, sizes=(32, 32, 24), seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 3, s, s, generator=g) for s in sizes]


def np_unit(x):
    x = x.detach().double().numpy()
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def log_softmax(x):
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def test_forward_losses_match_a_float64_reference_over_batch_keys_then_queue():
    model = tiny_model().eval()  # BN on running statistics: features do not depend on the batch
    key, weak, strong = views()
    queue = model.queue.clone().double().numpy()
    with torch.no_grad():
        # The key encoder starts as a copy of the query encoder, so the momentum update keeps it equal.
        k = np_unit(model.encoder_q(key))
        w, s = np_unit(model.encoder_q(weak)), np_unit(model.encoder_q(strong))
    bank = np.concatenate([k, queue])
    out = model(key, [weak], [strong])

    expected_c = -np.mean(log_softmax(w @ bank.T / 0.2)[np.arange(4), np.arange(4)])
    p_weak = np.exp(log_softmax(w @ bank.T / 0.2))
    expected_d = -np.mean((p_weak * log_softmax(s @ bank.T / 0.2)).sum(1))
    assert out["loss_contrastive"].item() == pytest.approx(expected_c, rel=1e-5)
    assert out["loss_ddm"].item() == pytest.approx(expected_d, rel=1e-5)
    assert out["loss"].item() == pytest.approx(expected_c + expected_d, rel=1e-5)


def test_ddm_weight_and_contrastive_ablation():
    key, weak, strong = views()
    ddm = tiny_model(ddm_weight=0.5).eval()(key, [weak], [strong])
    assert ddm["loss"].item() == pytest.approx(ddm["loss_contrastive"].item() + 0.5 * ddm["loss_ddm"].item(), rel=1e-6)
    ablation = tiny_model(strong_loss="contrastive").eval()(key, [weak], [strong])
    assert "loss_ddm" not in ablation and "loss_strong_contrastive" in ablation
    strong_only = tiny_model(strong_loss="contrastive").eval()(key, [], [strong])
    assert strong_only["loss"].item() == pytest.approx(strong_only["loss_strong_contrastive"].item())
    with pytest.raises(ValueError, match="weak view"):
        tiny_model()(key, [], [strong])


def test_gradients_reach_only_the_query_encoder_and_head():
    model = tiny_model()
    key, weak, strong = views()
    model(key, [weak], [strong])["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder_q.parameters())
    assert model.encoder_q.fc[0].weight.grad is not None and model.encoder_q.fc[2].weight.grad is not None
    assert all(p.grad is None and not p.requires_grad for p in model.encoder_k.parameters())
    assert not model.queue.requires_grad


def test_checkpointing_the_strong_views_keeps_gradients_and_bn_statistics():
    """Recomputed in the backward pass, the strong views must give the same gradients and must not
    count their batch in BN's running statistics twice."""
    results = []
    for checkpoint_strong in (False, True):
        model = tiny_model(checkpoint_strong=checkpoint_strong)
        key, weak, *strong = views(sizes=(32, 32, 24, 16))
        loss = model(key, [weak], strong)["loss"]
        loss.backward()
        results.append(
            (
                loss.detach(),
                {n: p.grad for n, p in model.encoder_q.named_parameters()},
                {n: b.clone() for n, b in model.encoder_q.named_buffers()},
            )
        )
    (loss, grads, buffers), (loss_ckpt, grads_ckpt, buffers_ckpt) = results
    torch.testing.assert_close(loss_ckpt, loss, rtol=0, atol=0)
    for name in grads:
        torch.testing.assert_close(grads_ckpt[name], grads[name], rtol=1e-5, atol=1e-6, msg=name)
    for name in buffers:
        torch.testing.assert_close(buffers_ckpt[name], buffers[name], rtol=0, atol=0, msg=name)
    assert buffers["bn1.num_batches_tracked"].item() == 3  # one weak and two strong views


def test_momentum_update_is_exact_and_in_place():
    model = tiny_model(momentum=0.99)
    with torch.no_grad():
        for p in model.encoder_k.parameters():
            p.normal_()
    q = [p.detach().double().clone() for p in model.encoder_q.parameters()]
    k = [p.detach().double().clone() for p in model.encoder_k.parameters()]
    pointers = [p.data_ptr() for p in model.encoder_k.parameters()]
    model.momentum_update_key_encoder()
    for param, kp, qp, ptr in zip(model.encoder_k.parameters(), k, q, pointers):
        # Within float32 rounding of alpha, 1 - alpha, the product and the sum (a relative bound fails
        # where the two terms cancel).
        bound = 4 * 2.0**-24 * (0.99 * kp.abs() + 0.01 * qp.abs())
        assert ((param.double() - (0.99 * kp + 0.01 * qp)).abs() <= bound).all()
        assert param.data_ptr() == ptr


def test_momentum_update_moves_key_parameters_but_leaves_key_bn_statistics_alone():
    """BN running statistics are the key encoder's own (MoCo): only parameters follow the query encoder."""
    model = tiny_model(momentum=0.5)
    with torch.no_grad():
        for encoder, shift in ((model.encoder_q, 3.0), (model.encoder_k, -1.0)):
            for bn in (m for m in encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)):
                bn.running_mean.normal_().add_(shift)
                bn.running_var.uniform_(0.5, 2.0).add_(shift + 1.0)
        for p in model.encoder_q.parameters():
            p.add_(1.0)  # the update must change every key parameter
    buffers_before = {k: v.clone() for k, v in model.encoder_k.named_buffers()}
    params_before = {k: v.clone() for k, v in model.encoder_k.named_parameters()}
    model.momentum_update_key_encoder()
    for name, value in model.encoder_k.named_buffers():
        assert torch.equal(value, buffers_before[name]), name
    assert any(name.endswith("running_var") for name in buffers_before)
    for name, value in model.encoder_k.named_parameters():
        assert not torch.equal(value, params_before[name]), name


def test_queue_is_fifo_and_its_pointer_wraps():
    model = tiny_model(queue_size=8)
    batches = [F.normalize(torch.randn(4, 16), dim=1) for _ in range(3)]
    model.dequeue_and_enqueue(batches[0])
    assert model.queue_ptr.item() == 4 and torch.equal(model.queue[:4], batches[0])
    model.dequeue_and_enqueue(batches[1])
    assert model.queue_ptr.item() == 0 and torch.equal(model.queue[4:], batches[1])
    model.dequeue_and_enqueue(batches[2])  # the oldest batch goes first
    assert torch.equal(model.queue, torch.cat([batches[2], batches[1]])) and model.queue_ptr.item() == 4


def test_forward_enqueues_the_keys_of_this_batch():
    model = tiny_model().eval()
    key, weak, strong = views()
    with torch.no_grad():
        expected = F.normalize(model.encoder_q(key), dim=1)
    model(key, [weak], [strong])
    torch.testing.assert_close(model.queue[:4], expected)
    assert model.queue_ptr.item() == 4


def test_queue_size_not_a_multiple_of_the_batch_is_a_clear_error():
    model = tiny_model(queue_size=10)
    with pytest.raises(ValueError, match="QUEUE_SIZE.*multiple"):
        model.dequeue_and_enqueue(torch.randn(4, 16))
