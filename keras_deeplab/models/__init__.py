"""DeepLab v2 / v3 / v3+ models and the FCN, U-Net and per-pixel baselines."""

from keras_deeplab.models.base import SegmentationModel, default_aspp_rates
from keras_deeplab.models.deeplab_v2 import DeepLabV2
from keras_deeplab.models.deeplab_v3 import DeepLabV3
from keras_deeplab.models.deeplab_v3_mobilenet import DeepLabV3MobileNetV3
from keras_deeplab.models.deeplab_v3_plus import DeepLabV3Plus
from keras_deeplab.models.fcn import FCN
from keras_deeplab.models.lraspp import LRASPP
from keras_deeplab.models.pixel_classifier import PixelClassifier
from keras_deeplab.models.presets import PRESETS, from_preset, list_presets, with_output_stride
from keras_deeplab.models.tf_deeplab import TFDeepLab
from keras_deeplab.models.torchvision_segmentation import TorchvisionDeepLabV3, TorchvisionFCN
from keras_deeplab.models.unet import UNet
from keras_deeplab.pretrained import from_pretrained, list_pretrained

__all__ = [
    "DeepLabV2",
    "DeepLabV3",
    "DeepLabV3MobileNetV3",
    "DeepLabV3Plus",
    "FCN",
    "LRASPP",
    "PRESETS",
    "PixelClassifier",
    "SegmentationModel",
    "TFDeepLab",
    "TorchvisionDeepLabV3",
    "TorchvisionFCN",
    "UNet",
    "default_aspp_rates",
    "from_preset",
    "from_pretrained",
    "list_presets",
    "list_pretrained",
    "with_output_stride",
]
