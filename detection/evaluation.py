"""Evaluators per data set, and the flat metrics that results.json and the report read."""

from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOEvaluator, DatasetEvaluator, DatasetEvaluators, PascalVOCDetectionEvaluator

from common.environment import DETECTRON2_HAS_COMPILED_OPS


class _Prefixed(DatasetEvaluator):
    """Renames an evaluator's result keys, so two evaluators of one task can run side by side."""

    def __init__(self, evaluator, suffix):
        self._evaluator, self._suffix = evaluator, suffix

    def reset(self):
        self._evaluator.reset()

    def process(self, inputs, outputs):
        self._evaluator.process(inputs, outputs)

    def evaluate(self):
        results = self._evaluator.evaluate() or {}
        return {f"{task}{self._suffix}": metrics for task, metrics in results.items()}


def build_evaluator(cfg, dataset_name, output_folder):
    """COCOEvaluator for COCO; for VOC, the VOC07 evaluator (AP50, the protocol's number) plus a
    COCO-style pass on the same predictions for APs/APm/APl, reported as ``bbox_coco_style``."""
    evaluator_type = MetadataCatalog.get(dataset_name).evaluator_type
    # The fast COCO evaluator needs detectron2's compiled ops; pycocotools gives identical numbers.
    coco = COCOEvaluator(dataset_name, output_dir=output_folder, use_fast_impl=DETECTRON2_HAS_COMPILED_OPS)
    if evaluator_type == "coco":
        return coco
    if evaluator_type == "pascal_voc":
        return DatasetEvaluators([PascalVOCDetectionEvaluator(dataset_name), _Prefixed(coco, "_coco_style")])
    raise NotImplementedError(f"no evaluator for {dataset_name!r} of type {evaluator_type!r}")


def flat_metrics(results):
    """{task: {metric: value}} keeping the summary metrics (AP, AP50, AP75, APs, APm, APl)."""
    keep = ("AP", "AP50", "AP75", "APs", "APm", "APl")
    return {task: {k: float(v) for k, v in metrics.items() if k in keep} for task, metrics in results.items()}
