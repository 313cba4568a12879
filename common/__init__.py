"""Helpers shared by every stage of the suite: file I/O, checkpoints, the detectron2 compatibility layer.

Every entry point imports this package before detectron2 or fvcore.
"""

import warnings

# fvcore.nn compiles its losses with torch.jit.script when detectron2 first imports it, and torch deprecates
# torch.jit.script with a FutureWarning that would open every detectron2 and converter log.
warnings.filterwarnings(
    "ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning, module=r"torch\.jit\._script"
)
