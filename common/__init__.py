"""Helpers shared by every stage of the suite: file I/O, checkpoints, the detectron2 compatibility layer."""
