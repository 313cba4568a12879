"""detectron2 transfer: configs for VOC07+12 Faster R-CNN and COCO Mask R-CNN (R50-C4, MoCo protocol).

Importing this package registers the suite's components with detectron2 (``Res5ROIHeadsExtraNorm``),
so a config that names them always resolves.
"""

from detection import roi_heads  # noqa: F401  (registers Res5ROIHeadsExtraNorm)
