"""detectron2 transfer: configs for VOC07+12 Faster R-CNN and COCO Mask R-CNN (R50-C4, MoCo protocol).

Importing this package registers the suite's components with detectron2 (``Res5ROIHeadsExtraNorm``),
so a config that names them always resolves.
"""
import common.d2compat  # noqa: F401  (before anything from detectron2)

from detection import roi_heads  # noqa: F401,E402  (registers Res5ROIHeadsExtraNorm)
