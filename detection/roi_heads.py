"""The C4 box/mask head of the MoCo detection protocol, which the CLSA paper adopts."""

from detectron2.config import configurable
from detectron2.layers import get_norm
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, Res5ROIHeads


@ROI_HEADS_REGISTRY.register()
class Res5ROIHeadsExtraNorm(Res5ROIHeads):
    """Res5ROIHeads with a normalisation layer (``res5.norm``) after the res5 stage.

    A self-supervised backbone is fine-tuned with BN everywhere (FREEZE_AT 0, naiveSyncBN); the
    extra norm normalises the per-RoI res5 features before the box and mask predictors, as in
    MoCo (He et al. 2020, appendix). Its weights are new: a converted backbone does not carry them.
    """

    @configurable
    def __init__(self, *, res5_norm, **kwargs):
        super().__init__(**kwargs)
        self.res5.add_module("norm", get_norm(res5_norm, self.res5[-1].out_channels))

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret["res5_norm"] = cfg.MODEL.RESNETS.NORM
        return ret
