"""Parity of an exported model against the Keras model it came from."""

import numpy as np

from keras_deeplab.np_metrics import confusion_matrix, mean_iou, softmax
from keras_deeplab.utils import IGNORE_LABEL


def parity_report(reference_logits, candidate_logits, labels=None, ignore_label=IGNORE_LABEL):
    """Compares an exported model's logits with the Keras model's, image by image.

    Args:
        reference_logits: non-empty list of float (H, W, C) arrays from the Keras model
            (sizes may differ between images).
        candidate_logits: list of float arrays from the exported model, the same shapes.
        labels: optional list of integer (H, W) masks for the mIoU delta (pixels equal to
            `ignore_label` are skipped; other values must be < C). Defaults to None.
        ignore_label: int. Label skipped by mIoU. Defaults to 255
            (`keras_deeplab.utils.IGNORE_LABEL`).

    Returns:
        dict of floats: `num_images` (int), `max_abs_diff_logits`,
        `max_abs_diff_probabilities` (softmax over the last axis), `max_abs_logit_keras`
        (the scale of the reference logits), `argmax_agreement` (fraction of pixels with
        the same label, in [0, 1]) and, when labels are given, `miou_keras`,
        `miou_exported` and `miou_delta` (exported minus Keras; mIoU over the classes
        present in labels or predictions).

    Raises:
        ValueError: the lists differ in length, or two maps differ in shape.
    """
    if len(reference_logits) != len(candidate_logits):
        raise ValueError("parity_report needs as many candidate as reference maps.")
    max_logit = max_prob = ref_scale = 0.0
    same = total = 0
    num_classes = int(reference_logits[0].shape[-1])
    conf_ref = np.zeros((num_classes, num_classes), np.int64)
    conf_cand = np.zeros_like(conf_ref)
    for i, (ref, cand) in enumerate(zip(reference_logits, candidate_logits)):
        ref = np.asarray(ref, np.float32)
        cand = np.asarray(cand, np.float32)
        if ref.shape != cand.shape:
            raise ValueError(
                f"Image {i}: exported model output shape {cand.shape} differs "
                f"from the Keras model's {ref.shape}."
            )
        max_logit = max(max_logit, float(np.abs(ref - cand).max()))
        ref_scale = max(ref_scale, float(np.abs(ref).max()))
        max_prob = max(max_prob, float(np.abs(softmax(ref) - softmax(cand)).max()))
        a, b = ref.argmax(-1), cand.argmax(-1)
        same += int((a == b).sum())
        total += a.size
        if labels is not None:
            conf_ref += confusion_matrix(labels[i], a, num_classes, ignore_label, strict=False)
            conf_cand += confusion_matrix(labels[i], b, num_classes, ignore_label, strict=False)
    report = {
        "num_images": len(reference_logits),
        "max_abs_diff_logits": max_logit,
        "max_abs_diff_probabilities": max_prob,
        "max_abs_logit_keras": ref_scale,
        "argmax_agreement": same / max(total, 1),
    }
    if labels is not None:
        report["miou_keras"] = mean_iou(conf_ref)
        report["miou_exported"] = mean_iou(conf_cand)
        report["miou_delta"] = report["miou_exported"] - report["miou_keras"]
    return report
