"""Keras layers for DeepLab models (backend-agnostic; native dilated kernels on TF)."""

from keras_deeplab.layers.aspp import ASPP
from keras_deeplab.layers.aspp_v2 import ASPPV2
from keras_deeplab.layers.atrous_conv import AtrousConv2D, AtrousDepthwiseConv2D
from keras_deeplab.layers.conv_bn import ConvBNReLU
from keras_deeplab.layers.decoder import DeepLabV3PlusDecoder
from keras_deeplab.layers.normalization import BatchNormalization
from keras_deeplab.layers.preprocessing import ImageNormalization
from keras_deeplab.layers.resize import ResizeLike, resize_to
from keras_deeplab.layers.separable import conv_bn, separable_conv_bn

__all__ = [
    "ASPP",
    "ASPPV2",
    "AtrousConv2D",
    "AtrousDepthwiseConv2D",
    "BatchNormalization",
    "ConvBNReLU",
    "DeepLabV3PlusDecoder",
    "ImageNormalization",
    "ResizeLike",
    "conv_bn",
    "resize_to",
    "separable_conv_bn",
]
