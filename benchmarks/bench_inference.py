"""Inference speed: DeepLabV3-ResNet50 OS16 (ours) vs keras-hub's DeepLabV3 segmenter.

Both with random weights built from config (no download), batch 1, on this machine, in
the same run. Reports images/s and achieved GFLOP/s (FLOPs = 2 x MACs counted by TF's
graph profiler on each model's own graph), next to the machine's conv ceiling, plus the
native-vs-space-to-batch timing of one ASPP rate-12 conv.

    python benchmarks/bench_inference.py                 # fp32 and bf16, 513x513
    python benchmarks/bench_inference.py --quick          # small and short (smoke check)
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _common import conv_ceiling_gflops, graph_flops, machine, quiet_tf, timed, write_json  # noqa: E402

quiet_tf()


def build_ours(num_classes):
    import keras_deeplab as kd

    return kd.models.DeepLabV3(num_classes=num_classes, backbone="resnet50", output_stride=16)


def build_keras_hub(num_classes):
    import keras_hub

    encoder = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 128, 256, 512],
        stackwise_num_blocks=[3, 4, 6, 3],
        stackwise_num_strides=[1, 2, 2, 2],
        block_type="bottleneck_block",
        use_pre_activation=False,
    )
    backbone = keras_hub.models.DeepLabV3Backbone(
        image_encoder=encoder,
        spatial_pyramid_pooling_key="P5",
        upsampling_size=8,
        dilation_rates=[6, 12, 18],
        low_level_feature_key="P2",
    )
    return keras_hub.models.DeepLabV3ImageSegmenter(backbone=backbone, num_classes=num_classes)


def measure(model, size, iters, warmup):
    import numpy as np
    import tensorflow as tf

    spec = tf.TensorSpec((1, size, size, 3), tf.float32)
    fn = tf.function(lambda t: model(t, training=False))
    concrete = fn.get_concrete_function(spec)
    flops = graph_flops(concrete)
    x = tf.constant(np.random.default_rng(0).uniform(0, 255, (1, size, size, 3)).astype("float32"))
    sec = timed(lambda: np.asarray(concrete(x)), warmup=warmup, iters=iters)
    return {"size": size, "sec_per_image": sec, "images_per_s": 1 / sec, "gflops_per_image": flops / 1e9,
            "achieved_gflops_s": flops / sec / 1e9}


def aspp_conv_native_vs_space_to_batch(iters):
    """One ASPP branch (3x3, 2048 -> 256) at the OS16 and OS8 feature sizes of a 513 input."""
    import tensorflow as tf

    out = {}
    for size, rate in ((33, 12), (65, 24), (65, 12)):
        x = tf.random.normal((1, size, size, 2048))
        k = tf.random.normal((3, 3, 2048, 256))
        native = tf.function(lambda x=x, k=k, rate=rate: tf.nn.conv2d(x, k, 1, "SAME", dilations=rate))
        stb = tf.function(lambda x=x, k=k, rate=rate: tf.nn.convolution(x, k, padding="SAME", dilations=rate))
        t_native = timed(lambda f=native: f().numpy(), iters=iters)
        t_stb = timed(lambda f=stb: f().numpy(), iters=iters)
        out[f"{size}x{size}_rate{rate}"] = {
            "native_ms": 1e3 * t_native, "space_to_batch_ms": 1e3 * t_stb, "speedup": t_stb / t_native}
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=513)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--dtypes", default="float32,mixed_bfloat16")
    parser.add_argument("--quick", action="store_true", help="129 px, 2 iterations, fp32 only")
    parser.add_argument("--conv-only", action="store_true", help="only the native-vs-space-to-batch conv")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "inference.json"))
    args = parser.parse_args()
    if args.quick:
        args.size, args.iters, args.warmup, args.dtypes = 129, 2, 1, "float32"

    import keras

    results = {"machine": machine(), "size": args.size, "runs": {}}
    results["aspp_conv"] = aspp_conv_native_vs_space_to_batch(max(2, args.iters))
    for key, r in results["aspp_conv"].items():
        print(f"ASPP conv {key} 2048->256: native {r['native_ms']:.1f} ms, space-to-batch "
              f"{r['space_to_batch_ms']:.1f} ms (native x{r['speedup']:.2f} faster)")
    if args.conv_only:
        return
    for policy in args.dtypes.split(","):
        keras.mixed_precision.set_global_policy(policy)
        ceiling = conv_ceiling_gflops("bfloat16" if "bfloat16" in policy else "float32",
                                      seconds=0.5 if args.quick else 2.0)
        ours = measure(build_ours(21), args.size, args.iters, args.warmup)
        # keras-hub's segmenter needs sizes divisible by 32: it fails at 513.
        try:
            hub = measure(build_keras_hub(21), args.size, args.iters, args.warmup)
        except Exception as e:  # noqa: BLE001 - documented failure mode
            size = args.size // 32 * 32
            print(f"keras-hub at {args.size}x{args.size}: {type(e).__name__}; measuring at {size}x{size}")
            hub = measure(build_keras_hub(21), size, args.iters, args.warmup)
            hub["note"] = f"fails at {args.size}x{args.size}: {type(e).__name__}"
        run = {"conv_ceiling_gflops_s": ceiling, "ours": ours, "keras_hub": hub,
               "ratio_images_per_s": ours["images_per_s"] / hub["images_per_s"],
               "ratio_gflops_s": ours["achieved_gflops_s"] / hub["achieved_gflops_s"],
               "ours_fraction_of_ceiling": ours["achieved_gflops_s"] / ceiling}
        results["runs"][policy] = run
        print(f"[{policy}] conv ceiling {ceiling:.0f} GFLOP/s")
        for name in ("ours", "keras_hub"):
            r = run[name]
            print(f"[{policy}] {name:9s} {r['size']}x{r['size']}: {r['images_per_s']:.2f} img/s, "
                  f"{r['gflops_per_image']:.1f} GFLOP/img, {r['achieved_gflops_s']:.0f} GFLOP/s")
        print(f"[{policy}] ours/keras-hub: x{run['ratio_images_per_s']:.2f} img/s, "
              f"x{run['ratio_gflops_s']:.2f} GFLOP/s; ours at {100 * run['ours_fraction_of_ceiling']:.0f}% of the ceiling")
    keras.mixed_precision.set_global_policy("float32")
    write_json(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
