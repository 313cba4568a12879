"""Loading pretrained weights into a detectron2 model: safely, and never silently from random init."""

import logging
import os
import pickle

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils.file_io import PathManager

from common.checkpoint_files import unloadable_reason
from common.errors import CheckpointError

logger = logging.getLogger(__name__)

# Weights that a converted backbone legitimately lacks: the extra res5 norm of Res5ROIHeadsExtraNorm.
NEW_WEIGHT_PREFIXES = ("roi_heads.res5.norm.",)
# Weights that must come from the checkpoint: the ResNet trunk and the res5 stage of the C4 head.
PRETRAINED_PREFIXES = ("backbone.", "roi_heads.res5.")


class _UnsafeObject(pickle.UnpicklingError):
    """A global that _ArraysOnlyUnpickler does not allow: code, not weights."""


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, numbers, strings and numpy arrays, and nothing that runs code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        # Pickle protocol 5 (Python 3.14's default) stores arrays through _frombuffer.
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("collections", "OrderedDict"),
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED or (module == "numpy" and name.startswith("dtype")):
            return super().find_class(module, name)
        raise _UnsafeObject(f"refusing to load {module}.{name}: not an array checkpoint")


# Names that mark a checkpoint detectron2 cannot use as it is: this suite's pretraining checkpoints,
# MoCo/CLSA reference checkpoints and torchvision ResNets, all to be converted with converters/to_d2.py.
_UNCONVERTED_PREFIXES = ("encoder_q.", "module.encoder_q.", "conv1.weight", "layer1.", "module.conv1.weight")


def check_weights_file(path):
    """Raises CheckpointError, before any model is built, if `path` is unreadable or an unconverted
    ResNet checkpoint; reads it as training will (PretrainedWeightsCheckpointer)."""
    import torch

    names = list(PretrainedWeightsCheckpointer(torch.nn.Module())._load_file(path)["model"])
    if any(str(name).startswith(_UNCONVERTED_PREFIXES) for name in names):
        raise CheckpointError(
            path,
            f"holds unconverted weights ({names[0]}, ...); convert it with "
            "python converters/to_d2.py CKPT and pass the .pkl it writes",
        )


class PretrainedWeightsCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer that refuses weights which leave the pretrained backbone unset.

    detectron2 only logs missing keys; a checkpoint of the wrong kind (an unconverted pretraining
    file, a model with other names) would then fine-tune from random init and report
    meaningless numbers. Here every backbone and res5 weight must be matched, except the
    documented new ``roi_heads.res5.norm``.
    """

    def _load_file(self, filename):
        try:
            if filename.endswith(".pkl"):
                with PathManager.open(filename, "rb") as f:
                    data = _ArraysOnlyUnpickler(f, encoding="latin1").load()
                if not isinstance(data, dict):
                    raise ValueError("the pickle does not hold a dict")
                if "model" in data and "__author__" in data:
                    return data
                # A Caffe2/Detectron model-zoo file: detectron2 renames its blobs.
                blobs = data.get("blobs", data)
                return {
                    "model": {k: v for k, v in blobs.items() if not k.endswith("_momentum")},
                    "__author__": "Caffe2",
                    "matching_heuristics": True,
                }
            return super()._load_file(filename)
        except Exception as err:
            raise CheckpointError(filename, _unreadable_reason(filename, err)) from err

    def _load_model(self, checkpoint):
        incompatible = super()._load_model(checkpoint)
        unset = sorted(
            k
            for k in incompatible.missing_keys
            if k.startswith(PRETRAINED_PREFIXES) and not k.startswith(NEW_WEIGHT_PREFIXES)
        )
        if unset:
            shown = ", ".join(unset[:8]) + (f", ... ({len(unset)} in all)" if len(unset) > 8 else "")
            raise CheckpointError(
                "MODEL.WEIGHTS",
                f"the weights leave {len(unset)} backbone/res5 weights unset ({shown}); "
                f"{len(incompatible.unexpected_keys)} checkpoint keys were unused "
                f"({', '.join(sorted(incompatible.unexpected_keys)[:5])}). Training would start from "
                "random init. Pass a file written by converters/to_d2.py",
            )
        return incompatible


_FIX = (
    "a pretraining checkpoint must be converted first (python converters/to_d2.py CKPT); for a damaged "
    "detection model_*.pth, put the name of an earlier one in OUTPUT_DIR/last_checkpoint to resume from it"
)


def _unreadable_reason(filename, err):
    """Why `filename` could not be read: objects that safe loading refuses (never called damaged, and
    without torch's advice to load unsafely), a damaged file, or no checkpoint at all."""
    if filename.endswith(".pkl"):
        if isinstance(err, _UnsafeObject):
            return f"holds objects that safe loading refuses ({err}); pass a .pkl written by converters/to_d2.py"
        return f"not a readable detectron2 checkpoint ({type(err).__name__}: {err}); {_FIX}"
    if os.path.isfile(filename):
        return unloadable_reason(filename, err, _FIX)
    return f"not a readable detectron2 checkpoint ({type(err).__name__}: {err})"
