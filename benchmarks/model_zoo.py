"""The README's model-zoo table: one row per registered pretrained checkpoint.

Columns: name, source, classes, the source's published mIoU / pixel accuracy (quoted, not
measured here), our model's parameter count, and multiply-adds of its conv layers for one
520x520 image (counted by recording every Conv2D / DepthwiseConv2D call of a forward pass:
``H_out * W_out * k_h * k_w * C_in / groups * C_out``), next to the source's published
figure (torchvision's ``_ops``, which it labels GFLOPS). No weights are downloaded (random
init; the counts do not depend on the values).

Usage: python benchmarks/model_zoo.py [--size 520] [--only deeplabv3_resnet50 ...]
Prints a Markdown table (paste it into README.md's "Pretrained models" section).
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_deeplab.pretrained.registry import (  # noqa: E402
    CHECKPOINTS,
    architectures,
    get_architecture,
)


def conv_macs(model, size):
    """Multiply-adds of every Conv2D / DepthwiseConv2D call for one (size, size) image."""
    total = [0]
    originals = {}

    def wrap(cls):
        original = cls.call
        originals[cls] = original

        def call(self, inputs, *args, **kwargs):
            out = original(self, inputs, *args, **kwargs)
            kh, kw = self.kernel_size
            h, w = out.shape[1], out.shape[2]
            if isinstance(self, keras.layers.DepthwiseConv2D):
                total[0] += h * w * kh * kw * out.shape[-1]
            else:
                total[0] += h * w * kh * kw * inputs.shape[-1] // self.groups * out.shape[-1]
            return out

        cls.call = call

    for cls in (keras.layers.Conv2D, keras.layers.DepthwiseConv2D):
        wrap(cls)
    try:
        model(np.zeros((1, size, size, 3), "float32"), training=False)
    finally:
        for cls, original in originals.items():
            cls.call = original
    return total[0]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=520)
    parser.add_argument("--only", nargs="*", default=None, help="architecture names")
    args = parser.parse_args(argv)
    print("| name | source | classes | source's mIoU / pixel acc. (COCO val2017, VOC labels) "
          f"| parameters | GMACs at {args.size} px (ours / source's) |")
    print("|---|---|---|---|---|---|")
    for checkpoint in CHECKPOINTS.values():
        if checkpoint.arch not in architectures() or (args.only and checkpoint.arch not in args.only):
            continue
        model = get_architecture(checkpoint.arch).build(num_classes=checkpoint.num_classes,
                                                        aux=checkpoint.aux)
        params = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
        macs = conv_macs(model, args.size)
        m = checkpoint.source_metrics
        print(f"| `{checkpoint.name}` | [{checkpoint.source}]({checkpoint.metrics_url.split(' ; ')[0]}) "
              f"| {checkpoint.num_classes} (VOC) | {m['miou']} / {m['pixel_acc']} "
              f"| {params:,} | {macs / 1e9:.1f} / {checkpoint.source_gflops:.1f} |", flush=True)


if __name__ == "__main__":
    main()
