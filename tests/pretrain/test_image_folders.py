import io
import logging
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from common.datasets import check_image_root
from common.errors import DatasetError
from pretrain import image_folders
from pretrain.image_folders import EncodedImageFolder, PerImageFolder, collate_encoded, decode_batch
from pretrain.views.sampler import sample
from pretrain.views.spec import Views, ViewSet, ViewSpec

# A cheap stand-in for a preset: key, one weak and one strong view.
SMALL_VIEWS = ViewSet(Views(ViewSpec(32, (0.2, 1.0)), [ViewSpec(32, (0.2, 1.0))], [ViewSpec(16, (0.1, 0.5), True)]))


def dataset_of(root, cls=PerImageFolder):
    return cls(root, SMALL_VIEWS, seed=0)


def jpeg_bytes(seed, side=40, format="JPEG"):
    array = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=format)
    return buffer.getvalue()


def make_tree(root, files):
    """files: {"class/name.JPEG": bytes}. Returns root."""
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


@pytest.fixture
def tree_with_corrupt_images(tmp_path):
    # ImageFolder sorts classes and files, so the indices are: 0 a/0_truncated, 1 a/1_good,
    # 2 b/0_garbage, 3 b/1_good, 4 b/2_truncated.
    return make_tree(
        tmp_path / "train",
        {
            "a/0_truncated.JPEG": jpeg_bytes(0)[:300],
            "a/1_good.JPEG": jpeg_bytes(1),
            "b/0_garbage.JPEG": b"not an image at all",
            "b/1_good.JPEG": jpeg_bytes(3),
            "b/2_truncated.JPEG": jpeg_bytes(4)[:300],
        },
    )


def test_items_are_the_views_and_the_index(synthetic_root):
    dataset = dataset_of(synthetic_root / "imagenet" / "train")
    assert len(dataset) == 80
    views, index = dataset[5]
    assert index == 5
    assert [tuple(v.shape) for v in views.flat()] == [(32, 32, 3), (32, 32, 3), (16, 16, 3)]
    assert all(v.dtype == torch.uint8 for v in views.flat())


def test_corrupt_image_is_replaced_by_the_next_one_warned_once_and_counted(tree_with_corrupt_images, caplog):
    dataset = dataset_of(tree_with_corrupt_images)
    with caplog.at_level(logging.WARNING, logger="pretrain.image_folders"):
        views, index = dataset[0]
        assert index == 1 and len(views.flat()) == 3
        assert dataset.num_skipped == 1
        assert "0_truncated.JPEG" in caplog.text
        caplog.clear()
        assert dataset[0][1] == 1
        assert dataset.num_skipped == 2  # counted again, but not warned again
        assert caplog.text == ""
        assert dataset[2][1] == 3
        assert "0_garbage.JPEG" in caplog.text
        assert dataset[3][1] == 3
        assert dataset[4][1] == 1  # wraps past the end to a/0 (corrupt) and on to a/1
    assert dataset.num_skipped == 5


def test_corrupt_images_keep_batches_full_and_are_counted_across_workers(tree_with_corrupt_images):
    dataset = dataset_of(tree_with_corrupt_images)
    loader = torch.utils.data.DataLoader(dataset, batch_size=5, num_workers=2, multiprocessing_context="fork")
    batches = list(loader)
    assert len(batches) == 1
    views, indices = batches[0]
    assert [v.shape[0] for v in views.flat()] == [5, 5, 5]
    assert indices.tolist() == [1, 1, 3, 3, 1]
    assert dataset.num_skipped == 1 + 1 + 2  # items 0, 2 and 4 (which wraps through a/0)


def test_no_readable_image_is_a_clear_error(tmp_path):
    """Caught when the data set is built, or, if the files are damaged after that, when read."""
    root = make_tree(tmp_path / "train", {"a/x.JPEG": b"garbage", "b/y.JPEG": b"garbage"})
    with pytest.raises(DatasetError, match="none of its 2 images can be read"):
        dataset_of(root)
    (root / "a" / "x.JPEG").write_bytes(jpeg_bytes(0))
    dataset = dataset_of(root)
    (root / "a" / "x.JPEG").write_bytes(b"garbage")
    with pytest.raises(RuntimeError, match="could be read"):
        dataset[0]


def test_missing_root_names_the_folder_and_layout(tmp_path):
    missing = tmp_path / "no_such_dir"
    with pytest.raises(DatasetError, match="no_such_dir.*root/<class>/<image>"):
        check_image_root(missing)
    with pytest.raises(DatasetError, match="no_such_dir"):
        dataset_of(missing)


def test_file_as_root_is_a_clear_error(tmp_path):
    path = tmp_path / "train.tar"
    path.write_bytes(b"")
    with pytest.raises(DatasetError, match="train.tar.*not a folder"):
        check_image_root(path)


def test_empty_root_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="no class folders.*root/<class>/<image>"):
        check_image_root(tmp_path)


def test_flat_folder_of_images_gets_a_hint(tmp_path):
    (tmp_path / "x.JPEG").write_bytes(jpeg_bytes(0))
    with pytest.raises(DatasetError, match="move them into class sub-folders"):
        check_image_root(tmp_path)


def test_class_folders_without_images_are_a_clear_error(tmp_path):
    make_tree(tmp_path, {"a/readme.txt": b"", "b/labels.csv": b""})
    with pytest.raises(DatasetError, match="2 class folders but no images"):
        check_image_root(tmp_path)


def test_valid_root_passes(synthetic_root):
    check_image_root(synthetic_root / "imagenet" / "train")


# The batched path: workers read bytes, the training process decodes (tests: on the CPU).


def test_encoded_items_are_jpeg_bytes_as_on_disk_or_decoded_pixels_for_other_formats(tmp_path):
    root = make_tree(tmp_path / "train", {"a/0.JPEG": jpeg_bytes(0), "a/1.png": jpeg_bytes(1, format="PNG")})
    dataset = dataset_of(root, EncodedImageFolder)
    payload, index = dataset[0]
    assert index == 0 and bytes(payload.tolist()) == (root / "a/0.JPEG").read_bytes()
    pixels, index = dataset[1]
    assert index == 1 and np.array_equal(pixels.permute(1, 2, 0).numpy(), np.asarray(Image.open(root / "a/1.png")))


def test_batch_decode_equals_pil_and_replaces_undecodable_jpegs_keeping_the_batch_size(
    tree_with_corrupt_images, caplog
):
    dataset = dataset_of(tree_with_corrupt_images, EncodedImageFolder)
    with caplog.at_level(logging.WARNING, logger="pretrain.image_folders"):
        payloads, indices = collate_encoded([dataset[i] for i in range(5)])
        # The garbage file is not a JPEG: the worker tried to decode it and moved on to the next image.
        assert indices.tolist() == [0, 1, 3, 3, 4] and dataset.num_skipped == 1
        images, used = decode_batch(payloads, indices, dataset, torch.device("cpu"))
    assert used == [1, 1, 3, 3, 1] and len(images) == 5
    # The truncated JPEGs, found by the batch decode: a/0, and b/2 whose replacement wraps through a/0.
    assert dataset.num_skipped == 1 + 1 + 2
    assert "0_truncated.JPEG" in caplog.text and "2_truncated.JPEG" in caplog.text
    for image, index in zip(images, used):
        expected = np.asarray(Image.open(dataset.samples[index][0]).convert("RGB"))
        assert image.dtype == torch.uint8 and np.array_equal(image.permute(1, 2, 0).numpy(), expected)


def test_the_workers_draw_each_images_views_and_an_image_replaced_later_is_drawn_again(tree_with_corrupt_images):
    dataset = dataset_of(tree_with_corrupt_images, EncodedImageFolder)
    dataset.set_epoch(3)
    payloads, indices, uniforms = dataset.collate([dataset[i] for i in range(5)])
    images, used = decode_batch(payloads, indices, dataset, torch.device("cpu"))
    assert indices.tolist() == [0, 1, 3, 3, 4] and used == [1, 1, 3, 3, 1]  # two replaced after the draws
    ours = dataset.view_params(used, (indices.tolist(), uniforms))
    for mine, theirs in zip(ours.flat(), sample(SMALL_VIEWS, 0, 3, used).flat()):
        for name, value in vars(theirs).items():
            assert np.array_equal(getattr(mine, name), value), name


def test_a_batch_without_jpegs_is_the_workers_decoded_pixels(tmp_path):
    root = make_tree(tmp_path / "train", {f"a/{i}.png": jpeg_bytes(i, format="PNG") for i in range(2)})
    dataset = dataset_of(root, EncodedImageFolder)
    images, used = decode_batch(*collate_encoded([dataset[0], dataset[1]]), dataset, torch.device("cpu"))
    assert used == [0, 1] and [tuple(image.shape) for image in images] == [(3, 40, 40)] * 2


def test_jpegs_the_device_decoder_rejects_are_decoded_on_the_cpu(tmp_path, monkeypatch):
    """nvjpeg rejects some valid JPEGs; stand in for it with a decoder that fails off the CPU."""
    root = make_tree(tmp_path / "train", {f"a/{i}.JPEG": jpeg_bytes(i) for i in range(3)})
    dataset = dataset_of(root, EncodedImageFolder)
    real_decode = image_folders.decode_jpeg
    calls = []

    def device_rejects(data, mode, device="cpu"):
        calls.append(str(device))
        if str(device) != "cpu":
            raise RuntimeError("nvjpeg: unsupported")
        return real_decode(data, mode=mode)

    monkeypatch.setattr(image_folders, "decode_jpeg", device_rejects)
    payloads, indices = collate_encoded([dataset[i] for i in range(3)])
    images, used = decode_batch(payloads, indices, dataset, torch.device("meta"))
    assert used == [0, 1, 2] and dataset.num_skipped == 0
    assert [image.device.type for image in images] == ["meta"] * 3 and images[0].shape == (3, 40, 40)
    assert calls == ["meta"] + ["meta", "cpu"] * 3  # the batch, then each image on the device and on the CPU


def test_a_folder_of_only_unreadable_images_is_a_clear_error(tmp_path):
    make_tree(tmp_path, {"a/1.jpg": jpeg_bytes(0)[:100], "b/2.JPEG": b"not an image"})
    with pytest.raises(DatasetError, match=r"none of its 2 images can be read \(first: .*1.jpg"):
        check_image_root(tmp_path)
    make_tree(tmp_path, {"b/3.jpg": jpeg_bytes(1)})
    check_image_root(tmp_path)  # one readable image is enough: the rest are skipped while training


def encoded(seed, mode="RGB", **save):
    array = np.random.default_rng(seed).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).convert(mode).save(buffer, format="JPEG", **save)
    return buffer.getvalue()


def test_the_frame_header_says_which_jpegs_the_device_decodes():
    assert image_folders.jpeg_frame(encoded(0)) == (0xC0, 3)
    assert image_folders.jpeg_frame(encoded(0, progressive=True)) == (0xC2, 3)
    assert image_folders.jpeg_frame(encoded(0, "CMYK")) == (0xC0, 4)
    assert image_folders.jpeg_frame(encoded(0, "L")) == (0xC0, 1)
    assert image_folders.jpeg_frame(b"not a jpeg at all") is None
    files = [encoded(0), encoded(0, "L"), encoded(0, progressive=True), encoded(0, "CMYK"), jpeg_bytes(0, format="PNG")]
    assert [image_folders.device_decodes(data) for data in files] == [True, True, False, False, False]
    # No frame header in the bytes kept: the batch decoder refuses it and the image is replaced.
    assert image_folders.device_decodes(encoded(0)[:100])


def test_cmyk_and_progressive_jpegs_decode_as_pil_decodes_them(tmp_path):
    files = {"a/0.JPEG": encoded(0, "CMYK"), "a/1.JPEG": encoded(1, progressive=True), "a/2.JPEG": encoded(2, "L")}
    root = make_tree(tmp_path / "train", files)
    dataset = dataset_of(root, EncodedImageFolder)
    images, used = decode_batch(*collate_encoded([dataset[i] for i in range(3)]), dataset, torch.device("cpu"))
    assert used == [0, 1, 2] and dataset.num_skipped == 0
    for image, name in zip(images, sorted(files)):
        expected = np.asarray(Image.open(root / name).convert("RGB")).astype(int)
        # libjpeg-turbo's CMYK -> RGB and PIL's differ by a rounding step; the rest are equal.
        assert np.abs(image.permute(1, 2, 0).numpy().astype(int) - expected).max() <= 1, name


def device_decoder(monkeypatch, fail_with=None):
    """Stand in for nvjpeg on the meta device: it rejects CMYK, as nvjpeg does, or raises `fail_with`."""
    real_decode = image_folders.decode_jpeg
    calls = []

    def decode(data, mode, device="cpu"):
        batch = data if isinstance(data, list) else [data]
        calls.append((str(device), len(batch)))
        if str(device) != "cpu":
            if fail_with is not None:
                raise fail_with
            if any(image_folders.jpeg_frame(x).components == 4 for x in batch):
                raise RuntimeError("nvjpeg: unsupported colour space")
            decoded = [real_decode(x, mode=mode).to("meta") for x in batch]
            return decoded if isinstance(data, list) else decoded[0]
        return real_decode(data, mode=mode)

    monkeypatch.setattr(image_folders, "decode_jpeg", decode)
    return calls


def test_the_workers_decode_progressive_and_cmyk_jpegs_and_the_device_the_rest_together(tmp_path, monkeypatch):
    odd = {"a/4.JPEG": encoded(4, "CMYK"), "a/5.JPEG": encoded(5, progressive=True)}
    files = {f"a/{i}.JPEG": encoded(i) for i in range(4)} | odd
    root = make_tree(tmp_path / "train", files)
    dataset = dataset_of(root, EncodedImageFolder)
    items = [dataset[i] for i in range(6)]
    assert [payload.ndim for payload, _ in items] == [1, 1, 1, 1, 3, 3]  # bytes, and the workers' pixels
    calls = device_decoder(monkeypatch)
    images, used = decode_batch(*collate_encoded(items), dataset, torch.device("meta"))
    assert used == [0, 1, 2, 3, 4, 5] and dataset.num_skipped == 0
    assert calls == [("meta", 4)]  # one batch decode on the device, nothing on the host
    assert [image.device.type for image in images] == ["meta"] * 6
    for (pixels, _), name in zip(items[4:], odd):
        expected = np.asarray(Image.open(root / name).convert("RGB")).astype(int)
        assert np.abs(pixels.permute(1, 2, 0).numpy().astype(int) - expected).max() <= 1, name


@pytest.mark.parametrize(
    "failure", [torch.OutOfMemoryError("CUDA out of memory"), RuntimeError("CUDA error: an illegal memory access")]
)
def test_running_out_of_device_memory_is_not_taken_for_an_unreadable_image(tmp_path, monkeypatch, failure):
    dataset = dataset_of(
        make_tree(tmp_path / "train", {f"a/{i}.JPEG": encoded(i) for i in range(3)}), EncodedImageFolder
    )
    device_decoder(monkeypatch, fail_with=failure)
    with pytest.raises(RuntimeError, match="CUDA"):
        decode_batch(*collate_encoded([dataset[i] for i in range(3)]), dataset, torch.device("meta"))
    assert dataset.num_skipped == 0


def test_workers_forked_after_the_training_process_made_views_do_not_hang(synthetic_root):
    """OpenCV's thread pool does not survive a fork that reconfigures it: a DataLoader worker forked
    after the parent made views must still make its own (this hung with a per-worker setNumThreads)."""
    script = f"""
import torch
from pretrain.image_folders import PerImageFolder
from tests.pretrain.test_image_folders import SMALL_VIEWS
dataset = PerImageFolder({str(synthetic_root / "imagenet" / "train")!r}, SMALL_VIEWS, seed=0)
dataset[0]  # the parent runs every kernel once
loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=2, multiprocessing_context="fork")
views, indices = next(iter(loader))
print(indices.tolist())
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "[0, 1, 2, 3]", result.stderr[-2000:]


def test_a_batch_travels_as_one_buffer_and_splits_back_into_its_payloads(tmp_path):
    files = {"a/0.JPEG": jpeg_bytes(0), "a/1.png": jpeg_bytes(1, format="PNG"), "a/2.JPEG": jpeg_bytes(2, side=17)}
    dataset = dataset_of(make_tree(tmp_path / "train", files), EncodedImageFolder)
    items = [dataset[i] for i in range(3)]
    (buffer, shapes), indices = collate_encoded(items)
    assert buffer.dtype == torch.uint8 and buffer.ndim == 1 and indices.tolist() == [0, 1, 2]
    payloads = image_folders.split_encoded(buffer, shapes)
    for payload, (expected, _) in zip(payloads, items):
        assert payload.shape == expected.shape and torch.equal(payload, expected)
        assert payload.untyped_storage().data_ptr() == buffer.untyped_storage().data_ptr()  # views, no copies


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("folder", [PerImageFolder, EncodedImageFolder])
def test_both_executors_skip_an_image_beyond_pils_pixel_limit_before_decoding_it(tmp_path, monkeypatch, folder):
    """A limit of 1000 pixels: PIL decodes up to 2000, so the 40 x 40 JPEG is read and the 50 x 50 one
    (2500 pixels) is replaced by the next image, by either executor."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    root = make_tree(tmp_path / "train", {"a/0_large.JPEG": jpeg_bytes(0, side=50), "a/1.JPEG": jpeg_bytes(1)})
    dataset = dataset_of(root, folder)
    assert dataset[0][1] == 1 and dataset[1][1] == 1 and dataset.num_skipped == 1
