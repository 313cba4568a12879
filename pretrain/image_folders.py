"""The pretraining data sets: ImageFolders (ImageNet train layout) that yield each image's views
(PerImageFolder, DATA.AUGMENT per_image) or its encoded bytes for decoding in batches on the training
device (EncodedImageFolder, batched). Either way an item carries the index of the image actually used,
which, with the seed and the epoch, determines its views (pretrain/views/sampler.py).

A corrupt or unreadable image is skipped, not fatal: one bad file in 1.28M must not end a run of
days. It is logged once per file and process, counted in a counter shared by the DataLoader workers,
and replaced by the next readable image so that every batch keeps its size.
"""

import logging
import math
import multiprocessing
from typing import NamedTuple

import torch
from torchvision.io import ImageReadMode, decode_image, decode_jpeg

from common.datasets import UNREADABLE_IMAGE, check_image_root
from common.image_folder import ScannedImageFolder, check_pixel_limit
from pretrain.views.per_image import PerImageViews
from pretrain.views.sampler import draws, records, sample

logger = logging.getLogger(__name__)

_JPEG_MAGIC = b"\xff\xd8\xff"


class PretrainImageFolder(ScannedImageFolder):
    """ImageFolder whose items are (`read(path, index)`, index) of the image actually used: the base of
    PerImageFolder and EncodedImageFolder.

    An image's views are a function of (seed, epoch, index) only: `set_epoch` before each epoch,
    before the DataLoader starts its workers. `num_skipped` counts how many times an unreadable image
    was replaced by the next one, summed over this data set and its DataLoader workers (each epoch
    counts a bad file again).
    """

    def __init__(self, root, view_set, seed):
        check_image_root(root)
        super().__init__(root)
        self.view_set, self.seed, self.epoch = view_set, seed, 0
        # A lock-protected shared integer. Made in a spawn context because its lock then also pickles
        # into spawned/forkserver DataLoader workers, while forked workers simply inherit it.
        self._skipped = multiprocessing.get_context("spawn").Value("q", 0)
        self._warned = set()

    def set_epoch(self, epoch):
        self.epoch = epoch

    def view_params(self, indices, drawn=None):
        """The records of the views of images `indices` in the current epoch. `drawn`: (indices, uniforms),
        the draws (pretrain.views.sampler.draws) a DataLoader worker made for a batch, used for each image
        still in it (an image replaced after the worker drew, `decode_batch`, is drawn again)."""
        indices = [int(index) for index in indices]
        if drawn is None:
            return sample(self.view_set, self.seed, self.epoch, indices)
        drawn_indices, uniforms = drawn
        redraw = [row for row, (index, used) in enumerate(zip(drawn_indices, indices)) if index != used]
        if redraw:
            uniforms = uniforms.copy()
            uniforms[redraw] = draws(self.view_set, self.seed, self.epoch, [indices[row] for row in redraw])
        return records(self.view_set, uniforms)

    def __getitem__(self, index):
        return self._first_readable(index, self.read)

    def _first_readable(self, index, read):
        for offset in range(len(self.samples)):
            candidate = (index + offset) % len(self.samples)
            path = self.samples[candidate][0]
            try:
                return read(path, candidate), candidate
            except UNREADABLE_IMAGE as error:
                self._skip(path, error)
        raise RuntimeError(f"No image under {self.root!r} could be read; see the warnings above")

    @property
    def num_skipped(self):
        return self._skipped.value

    def _skip(self, path, error):
        with self._skipped.get_lock():
            self._skipped.value += 1
        if path not in self._warned:
            self._warned.add(path)
            logger.warning(
                "Skipping unreadable image %s (%s: %s); using the next image instead", path, type(error).__name__, error
            )


class PerImageFolder(PretrainImageFolder):
    """Items are (views, index): the views (pretrain.views.spec.Views of uint8 H x W x 3 tensors) of the
    image actually used, made in the DataLoader worker by the per-image executor, and its index."""

    def __init__(self, root, view_set, seed):
        super().__init__(root, view_set, seed)
        self.make_views = PerImageViews(view_set)

    def read(self, path, index):
        return self.make_views(self.loader(path), self.view_params([index]))


def _read_bytes(path):
    # Not torchvision.io.read_file: its tensor maps the file, and a DataLoader worker cannot pass
    # such a tensor to the training process ("Bad file descriptor"), which then waits forever.
    # The pixel limit of the per-image path's PIL, from the header: torchvision.io has none.
    with open(path, "rb") as file:
        data = bytearray(file.read())
    check_pixel_limit(data)
    return torch.frombuffer(data, dtype=torch.uint8)


def _decode_rgb(path):
    return decode_image(_read_bytes(path), mode=ImageReadMode.RGB)


class EncodedImageFolder(PretrainImageFolder):
    """Items are (payload, index), for decoding in batches on the training device (`decode_batch`),
    whose views the batched executor makes from `view_params(indices)`.

    The payload of a JPEG that the batch decoder takes whole (`device_decodes`) is its bytes as on
    disk (1-D uint8), so DataLoader workers only read it. Other images, progressive and CMYK JPEGs
    among them, are decoded by the worker on the CPU (uint8 3 x H x W, RGB): nvjpeg decodes a
    progressive file one at a time with its Huffman stage on the host and does not take CMYK, which
    would leave that work to the training process.
    """

    def read(self, path, index):
        data = _read_bytes(path)
        if device_decodes(data):
            return data
        return decode_image(data, mode=ImageReadMode.RGB)

    def collate(self, items):
        """`collate_encoded`'s batch and indices, and the draws of the images' views (`view_params`), made
        here in the DataLoader worker, so that the training process does not make them."""
        batch, indices = collate_encoded(items)
        return batch, indices, draws(self.view_set, self.seed, self.epoch, indices.tolist())

    def replace_undecodable(self, index, error):
        """Image `index` did not decode: warn and count it, and return the next image that decodes
        (on the CPU) as (pixels, index)."""
        self._skip(self.samples[index][0], error)
        return self._first_readable(index + 1, lambda path, _: _decode_rgb(path))


def collate_encoded(items):
    """A batch of EncodedImageFolder items as ((buffer, shapes), indices): the payloads concatenated
    into one flat uint8 buffer and each payload's shape (N x 3; a JPEG's bytes are (length, 0, 0)).

    One buffer rather than one shared tensor per image: each shared tensor costs a file descriptor and
    a mapping of its own in the training process (benchmarks/batch_transfer_speed.py).
    """
    payloads, indices = zip(*items)
    shapes = torch.tensor([list(p.shape) + [0] * (3 - p.ndim) for p in payloads], dtype=torch.int64)
    return (torch.cat([p.reshape(-1) for p in payloads]), shapes), torch.tensor(indices)


def split_encoded(buffer, shapes):
    """The payloads of a `collate_encoded` batch, as views into its buffer."""
    shapes = [[dim for dim in shape if dim] for shape in shapes.tolist()]
    return [part.view(shape) for part, shape in zip(torch.split(buffer, [math.prod(s) for s in shapes]), shapes)]


def _is_decode_error(error):
    """A decoder's refusal of the bytes. Running out of memory and device faults are RuntimeErrors too,
    but must propagate: caught here, they would log good images as unreadable and replace them."""
    return not isinstance(error, (torch.OutOfMemoryError, torch.AcceleratorError)) and "CUDA error" not in str(error)


# Start-of-frame markers, each followed by length (2 bytes), precision (1), height (2), width (2) and
# the number of components (1).
_START_OF_FRAME = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
# Sequential Huffman coding, baseline and extended: the frames a batched nvjpeg decode takes, in grey
# or YCbCr.
_SEQUENTIAL_HUFFMAN = {0xC0, 0xC1}


class JpegFrame(NamedTuple):
    marker: int  # the start-of-frame marker's second byte: 0xC0 baseline, 0xC2 progressive, ...
    components: int  # 3 for YCbCr, 4 for CMYK/YCCK, 1 for grey


def jpeg_frame(data):
    """The frame header of JPEG bytes (a tensor or bytes) as a JpegFrame, or None if none is found."""
    header = data[:65536].numpy().tobytes() if torch.is_tensor(data) else bytes(data[:65536])
    if header[:3] != _JPEG_MAGIC:
        return None
    position = 2
    while position + 9 < len(header):
        if header[position] != 0xFF:
            return None
        marker = header[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in _START_OF_FRAME:
            return JpegFrame(marker, header[position + 9])
        position += 2 + int.from_bytes(header[position + 2 : position + 4], "big")
    return None


def device_decodes(data):
    """Whether image bytes go to the batch decoder as they are: a JPEG of sequential Huffman coding in
    grey or YCbCr, or a JPEG whose frame header cannot be read (the decoder's refusal then replaces it,
    as for any corrupt JPEG)."""
    if bytes(data[:3].tolist() if torch.is_tensor(data) else data[:3]) != _JPEG_MAGIC:
        return False
    frame = jpeg_frame(data)
    return frame is None or (frame.marker in _SEQUENTIAL_HUFFMAN and frame.components in (1, 3))


def _decode_one(data, device):
    try:
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    except RuntimeError as error:
        if device.type == "cpu" or not _is_decode_error(error):
            raise
    # nvjpeg rejects some valid JPEGs; the CPU decoder takes them.
    return decode_jpeg(data, mode=ImageReadMode.RGB).to(device)


def _decode_jpegs(datas, device):
    """The decoded images, together if possible, else one by one; the RuntimeError for each image
    that no decoder reads."""
    if device.type == "cuda":
        # nvjpeg writes its output on a stream of its own that does not wait for ours, into memory our
        # stream may have just freed with kernels still queued on it: let them finish first.
        torch.cuda.current_stream(device).synchronize()
    try:
        return decode_jpeg(datas, mode=ImageReadMode.RGB, device=device)
    except RuntimeError as error:
        if not _is_decode_error(error):
            raise
        if device.type == "cuda":
            # The failed batch may still be writing into buffers that are freed on return.
            torch.cuda.synchronize(device)
    images = []
    for data in datas:
        try:
            images.append(_decode_one(data, device))
        except RuntimeError as error:
            if not _is_decode_error(error):
                raise
            images.append(error)
    return images


def decode_batch(batch, indices, dataset, device):
    """The images of a `collate_encoded` batch as uint8 3 x H x W RGB tensors on `device`, and the
    indices actually used.

    The JPEGs, which the workers left only where `device_decodes` (EncodedImageFolder.read), are
    decoded together (nvjpeg on a GPU). If the batch decode fails, each image is decoded alone, on the
    CPU where the device's decoder rejects it; an image no decoder reads is replaced through
    `dataset.replace_undecodable`, so the batch keeps its size.
    """
    payloads = split_encoded(*batch)
    images, indices = list(payloads), indices.tolist()
    jpegs = [i for i, payload in enumerate(payloads) if payload.ndim == 1]
    # None in a batch of, say, PNGs, which the workers decoded.
    decoded = zip(jpegs, _decode_jpegs([payloads[i] for i in jpegs], device)) if jpegs else []
    for i, image in decoded:
        if isinstance(image, RuntimeError):
            image, indices[i] = dataset.replace_undecodable(indices[i], image)
        images[i] = image
    return [image.to(device, non_blocking=True) for image in images], indices
