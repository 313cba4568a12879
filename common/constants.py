"""Constants that more than one stage of the pipeline uses."""

# Per-channel RGB mean and std of ImageNet (torchvision's), for inputs scaled to [0, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The 20 Pascal VOC class names in the devkit's order (label columns, ImageSets/Main/<class>_*.txt).
VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
# The "kind" of a pretraining checkpoint: written by pretraining, checked by every reader.
PRETRAIN_CHECKPOINT_KIND = "clsa-suite/pretrain"
