"""How long the batched path's training process waits to receive one batch of encoded images from the
DataLoader workers: the batch as one shared tensor per image (the collate before) against one flat
buffer with the images' shapes (pretrain.image_folders.collate_encoded), in one run.

The workers only hand over bytes already in memory (500x375 JPEGs of about 95 KiB), so the time per
batch is the hand-over itself: each shared tensor costs a file descriptor and its own mapping in the
receiving process.

    python benchmarks/batch_transfer_speed.py [--batch-size 256] [--batches 20] [--workers 2]
"""

import argparse
import statistics
import time

import torch
from torch.utils.data import DataLoader, Dataset

from benchmarks.images import photo_like_jpegs
from pretrain.image_folders import collate_encoded


class InMemoryJpegs(Dataset):
    def __init__(self, count):
        self.jpegs = [
            torch.frombuffer(bytearray(jpeg), dtype=torch.uint8) for jpeg in photo_like_jpegs(count, 500, 375, 94)
        ]

    def __len__(self):
        return 10**6

    def __getitem__(self, index):
        return self.jpegs[index % len(self.jpegs)].clone(), index


def one_tensor_per_image(items):
    payloads, indices = zip(*items)
    return list(payloads), torch.tensor(indices)


def seconds_per_batch(collate, args, dataset):
    loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers, collate_fn=collate)
    waits = []
    batches = iter(loader)
    for _ in range(args.warmup):
        next(batches)
    for _ in range(args.batches):
        time.sleep(args.step)  # a training step: the workers have the next batch ready by now
        start = time.perf_counter()
        next(batches)
        waits.append(time.perf_counter() - start)
    return statistics.median(waits)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--step", type=float, default=0.5, help="seconds the stand-in training step sleeps")
    args = parser.parse_args()
    dataset = InMemoryJpegs(64)
    print(
        f"{args.workers} workers, batch {args.batch_size}, median of {args.batches} batches after a {args.step} s step"
    )
    before = seconds_per_batch(one_tensor_per_image, args, dataset)
    flat = seconds_per_batch(collate_encoded, args, dataset)
    print(f"one tensor per image: {before * 1000:8.2f} ms per batch")
    print(f"one flat buffer:      {flat * 1000:8.2f} ms per batch")
    print(f"flat buffer: {before / flat:.1f}x faster to receive")


if __name__ == "__main__":
    main()
