"""Auxiliary-head training through compile-time loss dicts."""

import numpy as np
import pytest

import keras_deeplab as kd


def test_aux_head_total_loss_and_metrics():
    import tensorflow as tf

    model = kd.models.DeepLabV3(num_classes=3, backbone="resnet18",
                                backbone_kwargs={"base_filters": 8}, aspp_filters=16,
                                aux_head=True)
    loss, weights = kd.training.aux_loss(kd.losses.CrossEntropy(), aux_weight=0.4)
    assert weights == {"logits": 1.0, "aux_logits": 0.4}
    model.compile(optimizer=kd.training.poly_sgd(0.01, 10), loss=loss, loss_weights=weights,
                  metrics={"logits": [kd.metrics.MeanIoU(3)]})
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 3, (4, 32, 32, 1)).astype("int32")
    y[:, :4] = 255
    ds = tf.data.Dataset.from_tensor_slices({"images": x, "segmentation_masks": y}).batch(2)
    history = model.fit(kd.training.with_aux_targets(ds), epochs=1, verbose=0)
    assert {"logits_loss", "aux_logits_loss", "logits_mean_iou"} <= set(history.history)
    result = model.evaluate(kd.training.with_aux_targets(ds), return_dict=True, verbose=0)
    out = model.predict(x, verbose=0)
    ce = kd.losses.CrossEntropy()
    per_batch = [float(ce(y[i:i + 2], out["logits"][i:i + 2]))
                 + 0.4 * float(ce(y[i:i + 2], out["aux_logits"][i:i + 2])) for i in (0, 2)]
    assert result["loss"] == pytest.approx(np.mean(per_batch), rel=1e-4)
    # Calling a loss on the dict output gives the same weighted sum.
    assert float(ce(y[:2], {k: v[:2] for k, v in out.items()})) == pytest.approx(per_batch[0],
                                                                                  rel=1e-5)
    # Evaluation uses the main logits.
    full = kd.training.evaluate(model, ds, progress=False)
    assert full["mean_iou"] == pytest.approx(result["logits_mean_iou"], abs=1e-6)
    pairs = kd.training.with_aux_targets([(x[:2], y[:2])])
    assert set(pairs[0][1]) == {"logits", "aux_logits"}
