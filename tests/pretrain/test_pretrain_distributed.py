"""Two gloo processes on one global batch against one process on the same batch.

BN normalises with per-process batch statistics by design (shuffle-BN exists because of it), so a
2-process and a 1-process run differ in train mode. The step comparison therefore puts BN on its
running statistics: then every feature is a per-image function, and any difference comes from the
gather, the shuffle/unshuffle of keys, the positive labels or the queue. Shuffle-BN itself is checked
in train mode: which images each process's key encoder sees, and that the keys come back in global
sample order. The tolerance (rel 1e-5) covers float32 reductions over different batch shapes.
"""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from pretrain.builder import CLSA

GLOBAL_BATCH, WORLD = 8, 2
pytestmark = pytest.mark.slow  # two process start-ups: ~25-50 s on 2 cores


def make_model():
    torch.manual_seed(0)
    return CLSA("resnet18", dim=16, mlp_hidden=32, queue_size=16, shuffle_bn=True).eval()


def global_batch():
    g = torch.Generator().manual_seed(1)
    return [torch.randn(GLOBAL_BATCH, 3, s, s, generator=g) for s in (32, 32, 24)]


def step(net, model, views):
    optimizer = torch.optim.SGD(model.encoder_q.parameters(), lr=0.1, momentum=0.9)
    out = net(views[0], [views[1]], [views[2]])
    out["loss"].backward()
    optimizer.step()
    return out


def shuffled_keys(im_k):
    """Shuffle-BN in train mode: the key encoder's input and output on this process, and the keys returned."""
    model = make_model().train()
    seen = {}
    model.encoder_k.register_forward_hook(
        lambda module, inputs, output: seen.update(key_input=inputs[0].clone(), key_output=output.clone())
    )
    return {"keys": model.global_keys(im_k), **seen}


def worker(rank, init_file, results):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    model = make_model()
    net = DistributedDataParallel(model, broadcast_buffers=False)
    n = GLOBAL_BATCH // WORLD
    views = [v[rank * n : (rank + 1) * n] for v in global_batch()]
    out = step(net, model, views)
    shuffle_bn = shuffled_keys(views[0])
    # A model on rank 1 that used the local index as the label would score the wrong key as positive.
    torch.save(
        {
            "loss": out["loss"].detach(),
            "instance_acc": out["instance_acc"],
            "queue": model.queue.clone(),
            "queue_ptr": model.queue_ptr.clone(),
            "fc": model.encoder_q.fc[2].weight.detach().clone(),
            "conv1": model.encoder_q.conv1.weight.detach().clone(),
            **shuffle_bn,
        },
        f"{results}/rank{rank}.pt",
    )
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    mp.spawn(worker, args=(str(tmp / "init"), str(tmp)), nprocs=WORLD)
    ranks = [torch.load(tmp / f"rank{r}.pt") for r in range(WORLD)]
    model = make_model()
    single = step(model, model, global_batch())
    return ranks, single, model


def test_two_processes_give_the_one_process_loss_with_bn_on_running_statistics(runs):
    ranks, single, _ = runs
    mean_loss = sum(r["loss"] for r in ranks) / WORLD
    assert mean_loss.item() == pytest.approx(single["loss"].item(), rel=1e-5)
    # Each rank's own positives are found as often as in the single process (labels = rank * N + i).
    assert (sum(r["instance_acc"] for r in ranks) / WORLD).item() == pytest.approx(single["instance_acc"].item())


def test_queue_is_identical_on_every_rank_and_holds_the_global_batch(runs):
    ranks, _, model = runs
    assert torch.equal(ranks[0]["queue"], ranks[1]["queue"])
    assert ranks[0]["queue_ptr"].item() == ranks[1]["queue_ptr"].item() == GLOBAL_BATCH
    torch.testing.assert_close(ranks[0]["queue"], model.queue, rtol=1e-5, atol=1e-6)


def test_gradient_step_matches_one_process_with_bn_on_running_statistics(runs):
    ranks, _, model = runs
    for name, param in (("fc", model.encoder_q.fc[2].weight), ("conv1", model.encoder_q.conv1.weight)):
        assert torch.equal(ranks[0][name], ranks[1][name])
        torch.testing.assert_close(ranks[0][name], param.detach(), rtol=1e-4, atol=1e-6)


def global_positions(images, batch):
    """Index in `images` of each row of `batch` (rows must be exact copies)."""
    return [next(j for j in range(len(images)) if torch.equal(row, images[j])) for row in batch]


def test_shuffle_bn_feeds_each_key_encoder_a_shuffled_share_of_the_global_batch(runs):
    ranks, _, _ = runs
    images, n = global_batch()[0], GLOBAL_BATCH // WORLD
    positions = [global_positions(images, r["key_input"]) for r in ranks]
    assert sorted(positions[0] + positions[1]) == list(range(GLOBAL_BATCH))
    for rank, seen in enumerate(positions):
        assert len(seen) == n and set(seen) != set(range(rank * n, (rank + 1) * n)), seen


def test_shuffle_bn_returns_the_keys_in_global_sample_order(runs):
    """Reference: one process runs the train-mode key encoder on each rank's shuffled share."""
    ranks, _, _ = runs
    images = global_batch()[0]
    encoder_k = make_model().train().encoder_k
    expected = torch.empty_like(ranks[0]["keys"])
    with torch.no_grad():
        for r in ranks:
            expected[global_positions(images, r["key_input"])] = F.normalize(encoder_k(r["key_input"]), dim=1)
    assert torch.equal(ranks[0]["keys"], ranks[1]["keys"])
    torch.testing.assert_close(ranks[0]["keys"], expected, rtol=1e-5, atol=1e-6)
