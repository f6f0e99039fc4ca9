"""Our TF DeepLab models against an independent re-implementation of the ORIGINAL graph.

The reference below re-implements tensorflow/models ``research/deeplab`` at inference
(``model.py``: ``_extract_features``, ``refine_by_decoder``, ``_get_branch_logits``,
``predict_labels``; ``core/xception.py``: ``xception_65``, ``xception_module``,
``stack_blocks_dense``, ``fixed_padding``; ``research/slim/nets/mobilenet``: ``mobilenet_base``
with ``V2_DEF`` and its output-stride logic; ``core/feature_extractor.py``: the [-1, 1]
preprocessing and the decoder end points) with plain ``tf.nn`` ops, reading every weight by
its ORIGINAL variable name straight from the checkpoint (``tf.train.load_checkpoint``). It
uses none of our layers, builders or name mapping: BN epsilon (1e-3 in the backbones, 1e-5
in ASPP / decoder), ReLU / ReLU6 placement, explicit padding of strided convs, atrous rates
past the output stride, image pooling, ASPP branch order, the decoder's end points and its
``scale_dimension`` size, ``align_corners=True`` resizes and the logits' bias are all
written here from the original's semantics.

The checkpoints are written with the original names and shapes (tests/_tf_deeplab_names.py)
and random values in realistic ranges: He-scaled kernels; BN moving variances log-uniform
in [1e-3, 10] with the preceding conv's output channel scaled to that variance (so the
statistics match the activations, as in a trained model, and channels with variance near
the BN epsilon make 1e-3 and 1e-5 give different results); means, betas and gammas of
trained-model size. Our model loads them through ``kd.models.from_pretrained(name,
weights=<checkpoint prefix>)``.
"""

import numpy as np
import pytest
import tensorflow as tf
from _tf_deeplab_names import ARCHITECTURES
from test_tf_checkpoint import write_checkpoint

import keras_deeplab as kd

BACKBONE_EPS, HEAD_EPS = 1e-3, 1e-5
#: architecture -> a registered checkpoint of it (from_pretrained builds its class count)
CHECKPOINT = {
    "deeplabv3_mobilenetv2": "deeplabv3_mobilenetv2.tf_voc_trainaug",
    "deeplabv3plus_mobilenetv2": "deeplabv3plus_mobilenetv2.tf_ade20k",
    "deeplabv3plus_xception65": "deeplabv3plus_xception65.tf_voc_trainaug",
}


# --- checkpoint values in realistic ranges ------------------------------------------------------
def realistic_variables(spec, seed):
    """{name: float32} for [(name, shape)]: see the module docstring."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in spec:
        leaf = name.rsplit("/", 1)[-1]
        if leaf in ("weights", "depthwise_weights"):
            fan_in = int(np.prod(shape[:3])) if leaf == "weights" else shape[0] * shape[1]
            value = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        elif leaf == "biases":
            value = rng.normal(0.0, 0.1, shape)
        elif leaf == "gamma":
            value = rng.uniform(0.5, 1.5, shape)
        elif leaf == "beta":
            value = rng.normal(0.0, 0.2, shape)
        elif leaf == "moving_variance":
            value = np.exp(rng.uniform(np.log(1e-3), np.log(10.0), shape))
        elif leaf == "moving_mean":
            value = np.zeros(shape)  # set below, relative to the variance
        else:
            raise AssertionError(f"unexpected variable {name}")
        out[name] = value
    for name in [n for n in out if n.endswith("/BatchNorm/moving_variance")]:
        scope = name[: -len("/BatchNorm/moving_variance")]
        variance = out[name]
        out[f"{scope}/BatchNorm/moving_mean"] = rng.normal(0.0, 0.2, variance.shape) * np.sqrt(variance)
        if f"{scope}/weights" in out:  # (kh, kw, in, out): scale the output channels
            out[f"{scope}/weights"] = out[f"{scope}/weights"] * np.sqrt(variance)
        else:  # (kh, kw, channels, 1)
            out[f"{scope}/depthwise_weights"] = (out[f"{scope}/depthwise_weights"]
                                                 * np.sqrt(variance)[:, None])
    return {k: v.astype(np.float32) for k, v in out.items()}


# --- the reference: research/deeplab at inference, tf.nn ops, weights by original name --------
class Reference:
    """The original graph's ops on a checkpoint's variables."""

    def __init__(self, prefix):
        reader = tf.train.load_checkpoint(prefix)
        self.v = {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()}

    def batch_norm(self, x, scope, eps):
        g, b, m, var = (self.v[f"{scope}/BatchNorm/{k}"]
                        for k in ("gamma", "beta", "moving_mean", "moving_variance"))
        return (x - m) / np.sqrt(var + eps) * g + b

    def conv(self, x, scope, stride=1, rate=1, padding="SAME", eps=BACKBONE_EPS, act=None):
        """slim.conv2d + BatchNorm (+ activation)."""
        y = tf.nn.conv2d(x, self.v[f"{scope}/weights"], stride, padding, dilations=rate)
        y = self.batch_norm(y, scope, eps)
        return act(y) if act is not None else y

    def depthwise(self, x, scope, stride=1, rate=1, padding="SAME", eps=BACKBONE_EPS, act=None):
        """slim.separable_conv2d(num_outputs=None) + BatchNorm (+ activation)."""
        y = tf.nn.depthwise_conv2d(x, self.v[f"{scope}/depthwise_weights"], [1, stride, stride, 1],
                                   padding, dilations=[rate, rate])
        y = self.batch_norm(y, scope, eps)
        return act(y) if act is not None else y

    def logits(self, x):
        y = tf.nn.conv2d(x, self.v["logits/semantic/weights"], 1, "SAME")
        return y + self.v["logits/semantic/biases"]


def fixed_padding(x, kernel_size, rate):
    """core/xception.py fixed_padding: pad for the dilated kernel, begin = total // 2."""
    effective = kernel_size + (kernel_size - 1) * (rate - 1)
    total = effective - 1
    begin = total // 2
    return tf.pad(x, [[0, 0], [begin, total - begin], [begin, total - begin], [0, 0]])


def scale_dimension(dim, scale):
    return int((float(dim) - 1.0) * scale + 1.0)


def resize(x, height, width):
    return tf.compat.v1.image.resize_bilinear(x, [height, width], align_corners=True)


def mobilenet_v2(ref, x, output_stride):
    """slim mobilenet_base over V2_DEF up to layer_18 -> (features, layer_4/depthwise_output)."""
    # (scope, expansion, out channels, stride); "layer_<i>" is the i-th op (1-based)
    ops = [("Conv", None, 32, 2), ("expanded_conv", 1, 16, 1)]
    index = 1
    for channels, repeats, stride in ((24, 2, 2), (32, 3, 2), (64, 4, 2), (96, 3, 1),
                                      (160, 3, 2), (320, 1, 1)):
        for j in range(repeats):
            ops.append((f"expanded_conv_{index}", 6, channels, stride if j == 0 else 1))
            index += 1
    current, rate, low_level = 1, 1, None
    for layer, (scope, expansion, channels, stride) in enumerate(ops, 1):
        if current == output_stride:  # past the output stride: dilate instead of striding
            layer_stride, layer_rate, rate = 1, rate, rate * stride
        else:
            layer_stride, layer_rate, current = stride, 1, current * stride
        scope = f"MobilenetV2/{scope}"
        if expansion is None:
            x = ref.conv(x, scope, layer_stride, act=tf.nn.relu6)
            continue
        y = x
        if expansion > 1:
            y = ref.conv(y, f"{scope}/expand", act=tf.nn.relu6)
        y = ref.depthwise(y, f"{scope}/depthwise", layer_stride, layer_rate, act=tf.nn.relu6)
        if layer == 4:
            low_level = y
        y = ref.conv(y, f"{scope}/project")  # linear bottleneck
        x = y + x if layer_stride == 1 and x.shape[-1] == channels else y
    return x, low_level


def xception_65(ref, x, output_stride):
    """core/xception.py xception_65 -> (features, entry_flow/block2 separable_conv2_pointwise)."""
    s = "xception_65"
    x = ref.conv(fixed_padding(x, 3, 1), f"{s}/entry_flow/conv1_1", 2, padding="VALID",
                 act=tf.nn.relu)
    x = ref.conv(x, f"{s}/entry_flow/conv1_2", act=tf.nn.relu)
    # (block, units, skip, activation inside the separable convs, stride); the depths come
    # with the checkpoint's weights
    blocks = [("entry_flow/block1", 1, "conv", False, 2),
              ("entry_flow/block2", 1, "conv", False, 2),
              ("entry_flow/block3", 1, "conv", False, 2),
              ("middle_flow/block1", 16, "sum", False, 1),
              ("exit_flow/block1", 1, "conv", False, 2),
              ("exit_flow/block2", 1, "none", True, 1)]
    target = output_stride // 2  # stack_blocks_dense after the stride-2 root
    current, rate, low_level = 1, 1, None
    for block, units, skip, inside, stride in blocks:
        for u in range(1, units + 1):
            if current == target:
                unit_stride, unit_rate, rate = 1, rate, rate * stride
            else:
                unit_stride, unit_rate, current = stride, 1, current * stride
            module = f"{s}/{block}/unit_{u}/xception_module"
            act = tf.nn.relu if inside else None
            residual = x
            for i in range(3):
                if not inside:
                    residual = tf.nn.relu(residual)  # ReLU before the separable conv
                conv_stride = unit_stride if i == 2 else 1
                name = f"{module}/separable_conv{i + 1}"
                if conv_stride == 1:
                    residual = ref.depthwise(residual, f"{name}_depthwise", 1, unit_rate, act=act)
                else:
                    residual = ref.depthwise(fixed_padding(residual, 3, unit_rate),
                                             f"{name}_depthwise", conv_stride, unit_rate,
                                             padding="VALID", act=act)
                residual = ref.conv(residual, f"{name}_pointwise", act=act)
                if block == "entry_flow/block2" and i == 1:
                    low_level = residual
            if skip == "conv":
                x = residual + ref.conv(x, f"{module}/shortcut", unit_stride)
            elif skip == "sum":
                x = residual + x
            else:
                x = residual
    return x, low_level


def deeplab_head(ref, features, low_level, height, width, atrous_rates, decoder):
    """model.py: image pooling, aspp0, separable atrous branches, concat_projection,
    [decoder at stride 4], logits, align-corners resize to the image size."""
    relu = tf.nn.relu
    fh, fw = features.shape[1], features.shape[2]
    pooled = tf.reduce_mean(features, [1, 2], keepdims=True)  # crop = image at inference
    branches = [resize(ref.conv(pooled, "image_pooling", eps=HEAD_EPS, act=relu), fh, fw),
                ref.conv(features, "aspp0", eps=HEAD_EPS, act=relu)]
    for i, rate in enumerate(atrous_rates, 1):
        y = ref.depthwise(features, f"aspp{i}_depthwise", rate=rate, eps=HEAD_EPS, act=relu)
        branches.append(ref.conv(y, f"aspp{i}_pointwise", eps=HEAD_EPS, act=relu))
    y = ref.conv(tf.concat(branches, 3), "concat_projection", eps=HEAD_EPS, act=relu)
    if decoder:
        low = ref.conv(low_level, "decoder/feature_projection0", eps=HEAD_EPS, act=relu)
        dh, dw = scale_dimension(height, 0.25), scale_dimension(width, 0.25)
        y = tf.concat([resize(y, dh, dw), resize(low, dh, dw)], 3)
        for k in (0, 1):
            y = ref.depthwise(y, f"decoder/decoder_conv{k}_depthwise", eps=HEAD_EPS, act=relu)
            y = ref.conv(y, f"decoder/decoder_conv{k}_pointwise", eps=HEAD_EPS, act=relu)
    return resize(ref.logits(y), height, width)


def reference_logits(arch, prefix, images, output_stride):
    ref = Reference(prefix)
    x = images * (2.0 / 255.0) - 1.0  # feature_extractor's preprocessing
    height, width = images.shape[1:3]
    if arch == "deeplabv3plus_xception65":
        features, low = xception_65(ref, x, output_stride)
        rates = tuple(r * 16 // output_stride for r in (6, 12, 18))
        decoder = True
    else:
        features, low = mobilenet_v2(ref, x, output_stride)
        rates = ()  # the model zoo's MobileNetV2 models: image pooling + 1x1 only
        decoder = arch == "deeplabv3plus_mobilenetv2"
    return np.asarray(deeplab_head(ref, features, low, height, width, rates, decoder))


# --- the tests -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint_of(tmp_path_factory):
    """arch -> checkpoint prefix with realistic random values (written once per module)."""
    written = {}

    def get(arch):
        if arch not in written:
            name = CHECKPOINT[arch]
            num_classes = kd.pretrained.CHECKPOINTS[name].num_classes
            variables = realistic_variables(ARCHITECTURES[arch](num_classes), seed=len(written))
            written[arch] = write_checkpoint(tmp_path_factory.mktemp(arch) / "model.ckpt",
                                             variables)
        return written[arch]

    return get


def _compare(arch, prefix, output_stride, sizes, tmp_path):
    model = kd.models.from_pretrained(CHECKPOINT[arch], weights=prefix,
                                      cache_dir=str(tmp_path / "cache"))
    if output_stride != 16:
        model = kd.models.with_output_stride(model, output_stride)
    rng = np.random.default_rng(0)
    for height, width in sizes:
        images = rng.uniform(0, 255, (1, height, width, 3)).astype("float32")
        expected = reference_logits(arch, prefix, images, output_stride)
        got = np.asarray(model(images, training=False))
        assert got.shape == expected.shape
        scale = np.abs(expected).max()
        assert scale > 1.0, "degenerate logits: the comparison would be meaningless"
        error = np.abs(got - expected).max()
        agree = np.mean(got.argmax(-1) == expected.argmax(-1))
        where = f"{arch} OS{output_stride} {height}x{width}"
        assert error <= 1e-4 * scale, f"{where}: max|diff| {error:.3g}, logit scale {scale:.3g}"
        assert agree >= 0.999, f"{where}: argmax agreement {agree:.4f}"


@pytest.mark.parametrize("output_stride", [16, 8])
@pytest.mark.parametrize("arch", ["deeplabv3_mobilenetv2", "deeplabv3plus_mobilenetv2"])
def test_mobilenetv2_models_match_the_original_graph(arch, output_stride, checkpoint_of,
                                                     tmp_path):
    _compare(arch, checkpoint_of(arch), output_stride, [(65, 97), (64, 96)], tmp_path)


@pytest.mark.large
def test_xception65_model_matches_the_original_graph(checkpoint_of, tmp_path):
    _compare("deeplabv3plus_xception65", checkpoint_of("deeplabv3plus_xception65"), 16,
             [(65, 49)], tmp_path)


def test_image_pooling_crop_size_at_the_crop_size_matches_the_original(checkpoint_of, tmp_path):
    """The original at inference pools a crop-size window (``image_pooling_crop_size``) over an
    input padded to the crop size: at an input of exactly that size it is the global mean the
    reference takes. A static input smaller than the crop is refused when building."""
    arch = "deeplabv3_mobilenetv2"
    prefix = checkpoint_of(arch)
    loaded = kd.models.from_pretrained(CHECKPOINT[arch], weights=prefix,
                                       cache_dir=str(tmp_path / "cache"))
    size = (65, 97)
    options = dict(num_classes=loaded.num_classes, backbone="mobilenetv2", aspp_rates=(),
                   decoder_output_stride=None, image_pooling_crop_size=size)
    model = kd.models.TFDeepLab(**options, input_shape=size + (3,))
    model.set_weights(loaded.get_weights())
    images = np.random.default_rng(1).uniform(0, 255, (1,) + size + (3,)).astype("float32")
    expected = reference_logits(arch, prefix, images, 16)
    got = np.asarray(model(images, training=False))
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()
    with pytest.raises(ValueError, match=r"image_pooling_crop_size=\(65, 97\)"):
        kd.models.TFDeepLab(**options, input_shape=(49, 97, 3))
