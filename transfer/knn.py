"""Weighted k-nearest-neighbour evaluation of a frozen backbone (Wu et al. 2018, as DINO evaluates it).

    python transfer/knn.py --weights CKPT --data ROOT [--num-gpus N]
    torchrun --nproc_per_node 8 transfer/knn.py --weights CKPT --data ROOT
    srun --ntasks-per-node 8 python transfer/knn.py --weights CKPT --data ROOT

ROOT holds train/ and val/ in ImageFolder layout. The backbone stays in eval mode with no gradient;
its res5 map is global-average-pooled and L2-normalised, on Resize 256 + CenterCrop 224 views of
both splits. Each val image's k most cosine-similar train images vote for their class with weight
exp(similarity / T), T = 0.07; top-1 and top-5 are reported for k in 10, 20, 100 and 200 (DINO's
eval_knn.py). Top-5 counts only classes that received a vote: DINO's sort ranks classes without
votes arbitrarily, which matters only when k < 5. The vote and its split over processes are
common/knn.py's.
"""

import time

from common import distributed
from common.cli import at_least, exit_on_user_error, positive
from common.datasets import IMAGENET_SPLITS
from common.imagenet import center_crop_transform, check_imagenet_root, image_folders
from common.knn import KS, TEMPERATURE, knn_accuracy
from common.trunk import build_trunk
from transfer import cli, results


def get_parser():
    p = cli.parser(__doc__, "output/knn")
    p.add_argument("--data", required=True, help="ImageNet root with train/ and val/ (ImageFolder layout)")
    p.add_argument("--ks", type=at_least(1), nargs="+", default=list(KS), help="neighbour counts to report")
    p.add_argument("--temperature", type=positive(), default=TEMPERATURE, help="T of the vote weight exp(sim / T)")
    p.add_argument(
        "--crop-size",
        type=at_least(1),
        default=224,
        help="CenterCrop size after a resize to crop * 256 / 224 (224: the protocol)",
    )
    p.add_argument("--batch-size", type=at_least(1), default=256, help="images per forward pass and process")
    p.add_argument("--workers", type=at_least(0), default=8, help="data-loading workers per process")
    return distributed.add_arguments(p)


def report(metrics, args, weights, train_set, val_set, world, start):
    ks = sorted(int(name.removeprefix("top1_k")) for name in metrics if name.startswith("top1_k"))
    for k in ks:
        print(f"k={k}: top-1 {metrics[f'top1_k{k}']:.2f}  top-5 {metrics[f'top5_k{k}']:.2f}")
    left_out = sorted(set(args.ks) - set(ks))
    resize = round(args.crop_size * 256 / 224)
    settings = f"Resize {resize} CenterCrop {args.crop_size}, T {args.temperature}, k in {ks}"
    if left_out:
        settings += f" (left out, larger than the train set: {left_out})"
    split_sizes = {"train": len(train_set), "val": len(val_set), "classes": len(train_set.classes)}
    return results.write_results(
        args.output_dir,
        "knn",
        metrics,
        results.protocol(__doc__, settings),
        weights,
        args.data,
        IMAGENET_SPLITS,
        split_sizes,
        start,
        world,
        feature_layer="res5 (global average pool, the fc input)",
    )


def run(process, args):
    start = time.perf_counter()
    backbone, weights = results.load_weights(args.weights)
    transform = center_crop_transform(args.crop_size)
    train_set, val_set = image_folders(args.data, train_transform=transform, val_transform=transform)
    trunk = build_trunk(backbone, "res5").to(process.device)
    metrics = knn_accuracy(
        trunk,
        train_set,
        val_set,
        len(train_set.classes),
        process.device,
        args.ks,
        args.temperature,
        args.batch_size,
        args.workers,
    )
    if process.rank == 0:
        report(metrics, args, weights, train_set, val_set, process.world_size, start)


def main(args):
    plan = distributed.detect(args.num_gpus)
    results.check_inputs(args.weights, check_imagenet_root, args.data)
    with results.output_folder(args.output_dir, "knn", args.weights, plan.first_rank):
        distributed.launch(run, args, plan=plan)


def cli_main():
    """`python transfer/knn.py`, and the `clsa-knn` command of an installed package."""
    exit_on_user_error(main, get_parser().parse_args())


if __name__ == "__main__":
    cli_main()
