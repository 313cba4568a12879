"""Checkpoint converters: to_d2 (detectron2 .pkl) and to_torchvision (torchvision state dict).

checkpoint.load_backbone reads every supported checkpoint kind for both.
"""
