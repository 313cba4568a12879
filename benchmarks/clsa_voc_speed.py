"""Per-image cost of the CLSA reference VOC07 protocol (transfer/voc07_linear.py --protocol clsa), and
what a full run on real VOC07 costs at those rates.

Measured here: the train / val / test transforms of one image in one process (= one DataLoader
worker), decode included, on photo-like JPEGs of VOC's typical size; and the model's throughput on
this machine's device: the training step (ResNet-50 in train mode, fc-only backward and SGD step,
batch 16) and the eval forward (val: one crop; test: 5 crops). On the CPU every time is the
process's CPU time (time.process_time), so the rates are per core and hold on a machine shared with
other jobs; on a GPU they are wall-clock times. The full-run figures multiply these
rates by VOC07's split sizes (train 2501, val 2510, test 4952) and the 100 epochs: an estimate, not a
measured run.

    python benchmarks/clsa_voc_speed.py [--images 40] [--batches 3] [--size 500x375]
"""

import argparse
import io
import time

import torch
import torchvision
from PIL import Image

from benchmarks.images import photo_like_jpegs
from transfer.clsa_voc import build_transforms

VOC07 = {"train": 2501, "val": 2510, "test": 4952}
EPOCHS, BATCH = 100, 16


def transform_ms(transform, jpegs):
    start = time.process_time()
    for image_bytes in jpegs:
        with Image.open(io.BytesIO(image_bytes)) as image:
            transform(image.convert("RGB"))
    return 1000 * (time.process_time() - start) / len(jpegs)


def images_per_second(step, images_per_batch, batches, device):
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    step()  # warm-up (cuDNN autotuning, allocator)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = clock()
    for _ in range(batches):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batches * images_per_batch / (clock() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=40, help="JPEGs timed per transform")
    parser.add_argument("--batches", type=int, default=3, help="batches timed per model measurement")
    parser.add_argument("--size", default="500x375", help="JPEG width x height")
    parser.add_argument("--crop-size", type=int, default=300)
    parser.add_argument("--resize", type=int, default=330)
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    transforms = build_transforms(args.crop_size, args.resize)
    jpegs = photo_like_jpegs(args.images, width, height)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one DataLoader worker
    ms = {split: transform_ms(transforms[split], jpegs) for split in ("train", "val", "test")}
    torch.set_num_threads(threads)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = torchvision.models.resnet50(num_classes=20).to(device)
    for name, param in model.named_parameters():
        param.requires_grad = name.startswith("fc.")
    optimizer = torch.optim.SGD(model.fc.parameters(), lr=0.05, momentum=0.9)
    loss_fn = torch.nn.BCEWithLogitsLoss(reduction="sum")
    batch = torch.randn(BATCH, 3, args.crop_size, args.crop_size, device=device)
    crops = torch.randn(BATCH * 5, 3, args.crop_size, args.crop_size, device=device)
    targets = torch.zeros(BATCH, 20, device=device)

    def train_step():
        model.train()
        loss = loss_fn(model(batch), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    @torch.no_grad()
    def eval_step(images):
        model.eval()
        model(images)

    rate = {
        "train": images_per_second(train_step, BATCH, args.batches, device),
        "val": images_per_second(lambda: eval_step(batch), BATCH, args.batches, device),
        "test": images_per_second(lambda: eval_step(crops), BATCH, args.batches, device),
    }  # images, 5 crops each

    passes = {"train": EPOCHS, "val": EPOCHS, "test": 1}
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"{threads} threads, rates per core"
    print(f"device: {device} ({name}), ResNet-50 at {args.crop_size} px, batch {BATCH}; JPEGs {width}x{height}")
    print(
        "| split | transform ms/img (1 worker) | model img/s | images in a full run | data worker-h | model device-h |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    total_data = total_model = 0.0
    for split in ("train", "val", "test"):
        images = VOC07[split] * passes[split]
        data_h, model_h = images * ms[split] / 1000 / 3600, images / rate[split] / 3600
        total_data, total_model = total_data + data_h, total_model + model_h
        print(f"| {split} | {ms[split]:.1f} | {rate[split]:.1f} | {images} | {data_h:.2f} | {model_h:.2f} |")
    print(f"| all | | | | {total_data:.2f} | {total_model:.2f} |")


if __name__ == "__main__":
    main()
