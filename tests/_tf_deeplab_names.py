"""The ORIGINAL TensorFlow DeepLab checkpoint variables (name -> shape), re-derived from the
original model code, NOT from our layers. The tests write checkpoints with these names.

Sources (tensorflow/models, read with the search tools):

- research/deeplab/core/xception.py: ``xception_65`` (scope "xception_65"): root
  ``entry_flow/conv1_1`` (3x3, 32, stride 2) and ``entry_flow/conv1_2`` (3x3, 64) via
  ``resnet_utils.conv2d_same``; blocks ``entry_flow/block1..3`` (depths [128]*3, [256]*3,
  [728]*3, 'conv' shortcut, stride 2), ``middle_flow/block1`` (16 units, [728]*3, 'sum'),
  ``exit_flow/block1`` ([728, 1024, 1024], 'conv', stride 2), ``exit_flow/block2``
  ([1536, 1536, 2048], 'none'); each unit ``unit_<i>/xception_module`` holds
  ``separable_conv{1,2,3}_depthwise`` (``slim.separable_conv2d(num_outputs=None)``:
  ``depthwise_weights`` (3, 3, in, 1) + BatchNorm from ``xception_arg_scope``) and
  ``separable_conv{1,2,3}_pointwise`` (1x1 ``slim.conv2d``: ``weights`` + BatchNorm), and a
  ``shortcut`` 1x1 conv + BatchNorm for 'conv' units.
- research/deeplab/model.py: ``_extract_features`` (``image_pooling``, ``aspp0`` 1x1,
  ``aspp{1,2,3}`` split separable (``_split_separable_conv2d``: ``aspp<i>_depthwise`` /
  ``aspp<i>_pointwise``) when atrous rates are given, ``concat_projection`` 1x1, all with
  BatchNorm, depth 256); ``refine_by_decoder`` (scope ``decoder``: ``feature_projection0``
  1x1 to 48 on the decoder end point, then ``decoder_conv0`` / ``decoder_conv1`` split
  separable to 256); ``_get_branch_logits`` (scope ``logits``, ``semantic``: 1x1 conv with
  ``weights`` and ``biases``, no BatchNorm).
- research/deeplab/core/feature_extractor.py: decoder end points
  ``xception_65/entry_flow/block2/unit_1/xception_module/separable_conv2_pointwise`` (256
  channels) and ``MobilenetV2/layer_4/depthwise_output`` (expanded_conv_2's depthwise output,
  144 channels); MobileNetV2 is built up to ``layer_18`` (expanded_conv_16), so there is no
  ``Conv_1``.
- research/slim/nets/mobilenet/mobilenet_v2.py: ``V2_DEF`` (scope "MobilenetV2"): ``Conv``
  (3x3, 32, stride 2), ``expanded_conv`` (expansion 1: no ``expand``, 16 out), then
  ``expanded_conv_1..16`` with expansion 6 and (out, repeats) = (24, 2), (32, 3), (64, 4),
  (96, 3), (160, 3), (320, 1); each op: ``expand`` 1x1 conv, ``depthwise``
  (``depthwise_weights`` (3, 3, C, 1)), ``project`` 1x1 conv, each with BatchNorm.
"""

BN = ("gamma", "beta", "moving_mean", "moving_variance")


def _bn(scope, channels):
    return [(f"{scope}/BatchNorm/{v}", (channels,)) for v in BN]


def conv(scope, kh, kw, cin, cout, bias=False, bn=True):
    out = [(f"{scope}/weights", (kh, kw, cin, cout))]
    if bias:
        out.append((f"{scope}/biases", (cout,)))
    return out + (_bn(scope, cout) if bn else [])


def depthwise(scope, cin, k=3):
    return [(f"{scope}/depthwise_weights", (k, k, cin, 1))] + _bn(scope, cin)


def split_separable(scope, cin, cout):
    """DeepLab's split separable conv: ``<scope>_depthwise`` + ``<scope>_pointwise``."""
    return depthwise(f"{scope}_depthwise", cin) + conv(f"{scope}_pointwise", 1, 1, cin, cout)


def xception_65():
    """[(name, shape)] of the Xception-65 backbone (scope "xception_65")."""
    s = "xception_65"
    out = conv(f"{s}/entry_flow/conv1_1", 3, 3, 3, 32) + conv(f"{s}/entry_flow/conv1_2", 3, 3, 32, 64)
    blocks = [("entry_flow/block1", 1, [128] * 3, "conv"),
              ("entry_flow/block2", 1, [256] * 3, "conv"),
              ("entry_flow/block3", 1, [728] * 3, "conv"),
              ("middle_flow/block1", 16, [728] * 3, "sum"),
              ("exit_flow/block1", 1, [728, 1024, 1024], "conv"),
              ("exit_flow/block2", 1, [1536, 1536, 2048], "none")]
    cin = 64
    for block, units, depths, skip in blocks:
        for u in range(1, units + 1):
            module = f"{s}/{block}/unit_{u}/xception_module"
            c = cin
            for i, d in enumerate(depths, 1):
                out += split_separable(f"{module}/separable_conv{i}", c, d)
                c = d
            if skip == "conv":
                out += conv(f"{module}/shortcut", 1, 1, cin, depths[-1])
            cin = depths[-1]
    return out


def mobilenet_v2():
    """[(name, shape)] of DeepLab's MobileNetV2 (depth 1.0, up to layer_18; scope
    "MobilenetV2")."""
    s = "MobilenetV2"
    out = conv(f"{s}/Conv", 3, 3, 3, 32)
    out += depthwise(f"{s}/expanded_conv/depthwise", 32) + conv(f"{s}/expanded_conv/project", 1, 1, 32, 16)
    cin, i = 16, 1
    for cout, repeats in ((24, 2), (32, 3), (64, 4), (96, 3), (160, 3), (320, 1)):
        for _ in range(repeats):
            op, inner = f"{s}/expanded_conv_{i}", cin * 6
            out += conv(f"{op}/expand", 1, 1, cin, inner)
            out += depthwise(f"{op}/depthwise", inner)
            out += conv(f"{op}/project", 1, 1, inner, cout)
            cin, i = cout, i + 1
    return out


def aspp(cin, separable_rates=3):
    """Image pooling + aspp0 (+ ``separable_rates`` split separable atrous branches) +
    concat_projection, depth 256 (model.py ``_extract_features``)."""
    out = conv("image_pooling", 1, 1, cin, 256) + conv("aspp0", 1, 1, cin, 256)
    for i in range(1, separable_rates + 1):
        out += split_separable(f"aspp{i}", cin, 256)
    return out + conv("concat_projection", 1, 1, 256 * (2 + separable_rates), 256)


def decoder(low_level_channels):
    return (conv("decoder/feature_projection0", 1, 1, low_level_channels, 48)
            + split_separable("decoder/decoder_conv0", 256 + 48, 256)
            + split_separable("decoder/decoder_conv1", 256, 256))


def logits(num_classes):
    return conv("logits/semantic", 1, 1, 256, num_classes, bias=True, bn=False)


def deeplabv3plus_xception65(num_classes):
    return xception_65() + aspp(2048, 3) + decoder(256) + logits(num_classes)


def deeplabv3_mobilenetv2(num_classes):
    return mobilenet_v2() + aspp(320, 0) + logits(num_classes)


def deeplabv3plus_mobilenetv2(num_classes):
    return mobilenet_v2() + aspp(320, 0) + decoder(144) + logits(num_classes)


#: registry architecture name -> variables for a class count.
ARCHITECTURES = {
    "deeplabv3plus_xception65": deeplabv3plus_xception65,
    "deeplabv3_mobilenetv2": deeplabv3_mobilenetv2,
    "deeplabv3plus_mobilenetv2": deeplabv3plus_mobilenetv2,
}
