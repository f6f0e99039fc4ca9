"""The README's model-zoo table: one row per registered pretrained checkpoint.

Columns: name, source, classes, the source's published mIoU / pixel accuracy (quoted, not
measured here, with its evaluation setting), our model's parameter count, and multiply-adds
of its conv layers for one ``--size`` x ``--size`` image (counted by recording every Conv2D /
DepthwiseConv2D call of a forward pass: ``H_out * W_out * k_h * k_w * C_in / groups * C_out``),
next to the source's published figure where the registry records one (torchvision's
``_ops``, which it labels GFLOPS). The TF DeepLab model zoo publishes multiply-adds at its
own evaluation crop (PASCAL VOC 513x513 at OS16: 54.17B Xception-65, 2.75B MobileNetV2;
Cityscapes 1025x2049: 418.64B / 21.27B); compare with ``--size 513``.
With ``--tflite``, also the sizes of the ``kd.export.tflite`` files (float32 and int8, fixed
``--size`` input, main logits only), exported once per (architecture, class count). No
weights are downloaded (random init: counts and file sizes do not depend on the values; int8
is calibrated on two random images, enough for the file layout).

Usage: python benchmarks/model_zoo.py [--size 520] [--only deeplabv3_resnet50 ...] [--tflite]
Prints a Markdown table (paste it into README.md's "Pretrained models" section), e.g.

    nice python benchmarks/model_zoo.py --size 513 --tflite \
        --only deeplabv3plus_xception65 deeplabv3_mobilenetv2 deeplabv3plus_mobilenetv2
"""

import argparse
import os
import tempfile

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


def tflite_sizes_mb(model, size, workdir):
    """(float32 MB, int8 MB) of `kd.export.tflite` files of ``model`` at (size, size)."""
    from keras_deeplab.export.tflite import tflite

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (2, size, size, 3)).astype("float32")
    sizes = []
    for quantization in (None, "int8"):
        path = os.path.join(workdir, f"{model.name}_{quantization or 'float32'}.tflite")
        info = tflite(model, path, quantization=quantization, representative_data=images,
                      input_size=(size, size), num_calibration_images=2, num_parity_images=1,
                      verbose=False)
        sizes.append(info["size_bytes"] / 1e6)
        os.remove(path)
    return tuple(sizes)


def _metrics(checkpoint):
    m = checkpoint.source_metrics
    text = f"{m['miou']}" + (f" / {m['pixel_acc']}" if m.get("pixel_acc") is not None else "")
    return f"{text} ({checkpoint.metrics_dataset})"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=520)
    parser.add_argument("--only", nargs="*", default=None, help="architecture names")
    parser.add_argument("--tflite", action="store_true",
                        help="also export float32 / int8 TFLite files and report their sizes")
    args = parser.parse_args(argv)
    tflite_columns = " | TFLite fp32 / int8 MB" if args.tflite else ""
    print(f"| name | source | classes | source's mIoU / pixel acc. | parameters "
          f"| GMACs at {args.size} px (ours / source's){tflite_columns} |")
    print("|---|---|---|---|---|---|" + ("---|" if args.tflite else ""))
    workdir = tempfile.mkdtemp(prefix="model_zoo_") if args.tflite else None
    cache = {}
    for checkpoint in CHECKPOINTS.values():
        if checkpoint.arch not in architectures() or (args.only and checkpoint.arch not in args.only):
            continue
        key = (checkpoint.arch, checkpoint.num_classes, checkpoint.aux)
        if key not in cache:
            model = get_architecture(checkpoint.arch).build(num_classes=checkpoint.num_classes,
                                                            aux=checkpoint.aux)
            row = {"params": sum(int(np.prod(w.shape)) for w in model.trainable_weights),
                   "macs": conv_macs(model, args.size)}
            if args.tflite:
                row["tflite"] = tflite_sizes_mb(model, args.size, workdir)
            cache[key] = row
        row = cache[key]
        source_gmacs = (f"{checkpoint.source_gflops:.1f}" if checkpoint.source_gflops is not None
                        else "n/a")
        tflite_cell = (" | {:.1f} / {:.1f}".format(*row["tflite"]) if args.tflite else "")
        print(f"| `{checkpoint.name}` | [{checkpoint.source}]({checkpoint.metrics_url.split(' ; ')[0]}) "
              f"| {checkpoint.num_classes} | {_metrics(checkpoint)} "
              f"| {row['params']:,} | {row['macs'] / 1e9:.1f} / {source_gmacs}{tflite_cell} |",
              flush=True)
    if workdir:
        os.rmdir(workdir)


if __name__ == "__main__":
    main()
