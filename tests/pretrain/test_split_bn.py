"""Split batch norm (pretrain/builder.py's SplitBatchNorm, MODEL.SPLIT_BN_GROUPS): each sub-batch is
normalised with its own statistics, the keys are shuffled across the sub-batches and back, evaluation is
plain BN, and checkpoints keep BatchNorm2d's names."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from common.backbone import load_backbone
from common.errors import ConfigError
from converters.to_d2 import d2_name, to_d2_state_dict
from pretrain.builder import CLSA, SplitBatchNorm
from pretrain.config import PRESETS, get_cfg, load_config, split_bn_groups
from pretrain.main import main, parse_args
from pretrain.run_state import save_checkpoint

GROUPS = 4


def split_bn(channels=3):
    torch.manual_seed(0)
    bn = SplitBatchNorm(channels, GROUPS)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.normal_(0, 0.5)
    bn.running_mean.normal_(0, 0.1)
    bn.running_var.uniform_(0.5, 2.0)
    return bn


def batch(n=8, channels=3):
    """Samples whose statistics differ from one sub-batch (i % GROUPS) to the next."""
    torch.manual_seed(1)
    offsets = torch.arange(n).remainder(GROUPS).float().view(n, 1, 1, 1)
    return torch.randn(n, channels, 5, 5) * (1 + offsets) + 3 * offsets


def test_each_sub_batch_is_normalised_with_its_own_statistics_and_running_stats_average_them():
    bn, x = split_bn(), batch()
    # The reference: one plain BatchNorm2d per sub-batch, each from the same running statistics.
    plain = [nn.BatchNorm2d(3) for _ in range(GROUPS)]
    for reference in plain:
        reference.load_state_dict(bn.state_dict())

    out = bn.train()(x)

    for g, reference in enumerate(plain):
        torch.testing.assert_close(out[g::GROUPS], reference.train()(x[g::GROUPS]))
    torch.testing.assert_close(bn.running_mean, torch.stack([r.running_mean for r in plain]).mean(0))
    torch.testing.assert_close(bn.running_var, torch.stack([r.running_var for r in plain]).mean(0))
    assert bn.num_batches_tracked.item() == 1


def test_a_sub_batch_no_longer_sees_the_rest_of_the_batch():
    """The leak shuffle-BN prevents: with plain BN, changing one sample changes every output."""
    x = batch()
    changed = x.clone()
    changed[1] += 10  # sub-batch 1
    bn, plain = split_bn().train(), nn.BatchNorm2d(3).train()

    others = [i for i in range(len(x)) if i % GROUPS != 1]
    assert torch.equal(bn(x)[others], bn(changed)[others])
    assert not torch.allclose(plain(x)[others], plain(changed)[others])


def test_eval_is_batchnorm2d_with_the_same_running_statistics():
    bn = split_bn()
    bn.train()(batch())  # running statistics that split BN wrote
    plain = nn.BatchNorm2d(3)
    plain.load_state_dict(bn.state_dict())  # the same names, strictly

    x = batch(n=6)  # evaluation needs no whole sub-batches
    torch.testing.assert_close(bn.eval()(x), plain.eval()(x), rtol=0, atol=0)


def test_momentum_0_leaves_the_running_statistics_exactly_as_they_were():
    """What MODEL.CHECKPOINT_STRONG's recomputation relies on to count a batch once (CLSA._frozen_bn_statistics)."""
    bn = SplitBatchNorm(64, 8, momentum=0.0)
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2.0)
    before = {name: b.clone() for name, b in bn.named_buffers() if name != "num_batches_tracked"}

    bn.train()(torch.randn(16, 64, 3, 3))

    for name, value in before.items():
        assert torch.equal(getattr(bn, name), value), name


def test_a_batch_that_does_not_split_evenly_is_refused():
    with pytest.raises(ValueError, match="a batch of 6 does not split into 4"):
        split_bn().train()(batch(n=6))


class FlattenAndRecord(nn.Module):
    """A key encoder whose key is the image itself, so that the keys' order is checked exactly."""

    def forward(self, images):
        self.seen = images.clone()
        return images.flatten(1)


def model_with_recording_key_encoder(groups):
    model = CLSA("resnet18", dim=16, mlp_hidden=32, queue_size=16, split_bn_groups=groups)
    model.encoder_k = FlattenAndRecord()
    return model


def test_keys_are_shuffled_across_sub_batches_and_returned_in_sample_order():
    model = model_with_recording_key_encoder(GROUPS)
    im_k = torch.arange(16.0).view(16, 1, 1, 1).expand(16, 3, 2, 2).contiguous()
    torch.manual_seed(0)

    keys = model.global_keys(im_k)

    assert torch.equal(keys, F.normalize(im_k.flatten(1), dim=1))  # unshuffled exactly
    seen = model.encoder_k.seen[:, 0, 0, 0].long()
    assert sorted(seen.tolist()) == list(range(16))
    sub_batches = [set(seen[g::GROUPS].remainder(GROUPS).tolist()) for g in range(GROUPS)]
    assert any(len(members) > 1 for members in sub_batches)  # a sub-batch mixes samples of several


def test_without_split_bn_one_process_keeps_the_key_order():
    model = model_with_recording_key_encoder(groups=1)
    im_k = torch.randn(8, 3, 2, 2)

    model.global_keys(im_k)

    assert torch.equal(model.encoder_k.seen, im_k)


@pytest.mark.parametrize(
    "changes, world_size, groups",
    [
        ({}, 1, 8),  # the paper's 8 GPUs on one process
        ({}, 2, 1),  # shuffle-BN across processes
        ({"SOLVER.BATCH_SIZE": 8}, 1, 1),  # sub-batches of one image
        ({"SOLVER.BATCH_SIZE": 12}, 1, 1),  # not 8 equal sub-batches
        ({"MODEL.SHUFFLE_BN": False}, 1, 1),
        ({"MODEL.SPLIT_BN_GROUPS": 4}, 2, 4),
        ({"MODEL.SPLIT_BN_GROUPS": 1}, 1, 1),
    ],
)
def test_automatic_split_bn_is_on_where_shuffle_bn_would_be_a_no_op(changes, world_size, groups):
    cfg = get_cfg()
    cfg.merge_from_list([item for key, value in changes.items() for item in (key, value)])
    assert split_bn_groups(cfg, world_size) == groups


def test_sub_batches_that_do_not_divide_the_batch_are_refused_at_load():
    refusal = r"MODEL.SPLIT_BN_GROUPS \(3\) must divide the batch of each of the 2 processes \(128\)"
    with pytest.raises(ConfigError, match=refusal):
        load_config(str(PRESETS / "clsa_single.yaml"), ["MODEL.SPLIT_BN_GROUPS", "3"], world_size=2)


def test_a_one_process_run_logs_split_bn(synthetic_root, tiny_pretrain, tmp_path):
    train_root = synthetic_root / "imagenet" / "train"
    one_step = ("SOLVER.BATCH_SIZE", "16", "SOLVER.MAX_ITER", "1")
    main(parse_args(tiny_pretrain.args(train_root, tmp_path, *one_step)))

    log = (tmp_path / "log.txt").read_text()
    assert "split BN on: BN statistics over 8 sub-batches of 2 images per process, the keys shuffled" in log
    assert "no-op" not in log


def test_a_split_bn_checkpoint_converts_to_detectron2_like_a_torchvision_resnet(tmp_path):
    torch.manual_seed(0)
    model = CLSA("resnet50", dim=8, mlp_hidden=16, queue_size=8, split_bn_groups=GROUPS)
    images = torch.randn(8, 3, 32, 32)
    model.train()(images, [images], [])  # running statistics written by split BN
    optimizer = torch.optim.SGD(model.encoder_q.parameters(), lr=0.1)
    path = save_checkpoint(tmp_path, "model_final", model, optimizer, 0, 0, "MODEL:\n  ARCH: resnet50\n")

    backbone = load_backbone(path)
    d2 = to_d2_state_dict(backbone, path)

    trunk = {
        k: v
        for k, v in model.encoder_q.state_dict().items()
        if not k.startswith("fc.") and not k.endswith("num_batches_tracked")
    }
    assert backbone.arch == "resnet50" and len(d2) == len(trunk)
    for name, value in trunk.items():
        assert torch.equal(torch.from_numpy(d2[d2_name(name)]), value), name
