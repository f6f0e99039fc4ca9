"""The DeepLab rule that turns strides into dilation for a target output stride."""


def stage_strides_and_rates(stage_strides, output_stride, initial_stride):
    """Returns (strides, rates) per stage after removing strides beyond ``output_stride``.

    Walking the stages in order, a stage whose stride would take the network past
    ``output_stride`` keeps stride 1 instead and multiplies the atrous rate by the
    stride it dropped; every conv of that stage and the later ones uses the new rate.
    ResNet at OS16 gives conv5 rate 2; at OS8 conv4 rate 2 and conv5 rate 4.
    """
    current, rate = initial_stride, 1
    strides, rates = [], []
    for stride in stage_strides:
        if current * stride > output_stride:
            rate *= stride
            stride = 1
        else:
            current *= stride
        strides.append(stride)
        rates.append(rate)
    return strides, rates
