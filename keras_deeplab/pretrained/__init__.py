"""Published segmentation checkpoints (torchvision's and the TensorFlow DeepLab model zoo's),
converted exactly into our models.

Users call three functions (re-exported as ``kd.models.list_pretrained`` /
``kd.models.from_pretrained``):

- `list_pretrained()`: one row per checkpoint: name, source, classes, the source's own
  published mIoU / pixel accuracy (quoted as theirs, with a link), parameters, file size,
  licence.
- `from_pretrained(name, weights=None, num_classes=None, cache_dir=None)`: builds the
  architecture, downloads the source file once (``keras.utils.get_file``: cache dir,
  progress bar, then the SHA-256 prefix torchvision publishes in the file name is checked;
  the TF model zoo publishes no hash, so its ``.tar.gz`` is read to the end and the
  conversion's full variable check is the integrity check), converts it and caches the
  result as a Keras weights file, so later loads need neither torch nor the network.
  ``num_classes`` other than the checkpoint's keeps backbone and heads and gives a freshly
  initialised classifier (fine-tuning).
- `convert_file(path, source="torchvision" | "tf-deeplab", arch=..., output=...)`: a
  ``.pth`` file, or a TF DeepLab checkpoint (``.tar.gz``, ``model.ckpt`` prefix, its
  ``.index``), the user has -> a ``.keras`` model (or ``.weights.h5``).

Reading ``.pth`` files needs torch (``pip install keras_deeplab[convert]``); reading TF
checkpoints needs TensorFlow only (`tf_checkpoint.read_tf_checkpoint`,
``tf.train.load_checkpoint``: no TF1 graph, no slim); running a converted model needs
neither.

TensorFlow DeepLab architectures register the same way with ``map_keys`` returning
``{TF variable scope: keras layer}`` (`tf_checkpoint.tf_named_layers` does it for layers
named by the naming rule of `keras_deeplab.pretrained.tf_checkpoint`); the assignment is
`assign_state_dict` with ``layout="tf"`` (TF1/slim names, no transposes).

Plug-in interface (how an architecture joins; [tv-mobile] reads this)
----------------------------------------------------------------------
An architecture is registered once, in the module that defines its model, with::

    from keras_deeplab.pretrained.registry import register_architecture
    from keras_deeplab.pretrained.convert import torch_named_layers

    register_architecture(
        "lraspp_mobilenet_v3_large",          # torchvision's builder name = our arch name
        build=build_lraspp_mobilenet_v3_large,
        map_keys=torch_named_layers,          # or your own function, same contract
    )

- ``build(num_classes, aux, class_names=None, palette=None) -> keras.Model``: the model
  (a `keras_deeplab.models.SegmentationModel`) with torchvision's architecture, taking
  float RGB in [0, 255] (torchvision's normalisation is a layer inside the model),
  returning float32 logits ``(B, H, W, num_classes)`` resized to the input, or
  ``{"logits", "aux_logits"}`` when ``aux`` is true. ``aux`` is ignored (pass False) by
  architectures without an auxiliary head.
- ``map_keys(model) -> dict[str, keras.layers.Layer]``: torchvision module prefix (the
  state_dict key without ``.weight`` / ``.bias`` / ``.running_mean`` ...) -> the Keras layer
  holding those weights. `torch_named_layers` does this for models whose weight-holding
  layers are *named after the torch module* with "-" for "." (``"classifier-0-convs-1-0"``;
  Keras' PyTorch backend refuses "." in parameter names) and whose nested sub-models are
  named after the torch prefix (the backbone sub-model named ``"backbone"`` holding
  ``"layer1-0-conv1"`` -> ``"backbone.layer1.0.conv1"``).
  The converter handles each layer by type: ``Conv2D`` (OIHW -> HWIO, optional bias),
  ``DepthwiseConv2D`` ((C, 1, kh, kw) -> (kh, kw, C, 1)), ``BatchNormalization``
  (weight, bias, running_mean, running_var; ``num_batches_tracked`` ignored), ``Dense``
  ((out, in) -> (in, out)). Every shape is checked and every key must be used on both
  sides; the error lists all unmatched keys.

The checkpoint entries (URL, hash prefix, metrics, classes, palette, preprocessing) of all
six torchvision ``COCO_WITH_VOC_LABELS_V1`` checkpoints and of the six TensorFlow DeepLab
model-zoo checkpoints (Xception-65 / MobileNetV2 for VOC, Cityscapes, ADE20K; figures and
eval settings quoted from ``research/deeplab/g3doc/model_zoo.md``) are in
`registry.CHECKPOINTS`; an
entry whose ``arch`` is not registered yet is listed but `from_pretrained` says so.
The architectures register when ``keras_deeplab.models`` is imported (always, since the
package root imports it). ``tests/test_pretrained.py`` runs the parity check (torchvision's
own model, random weights, same photo) for every registered checkpoint.
"""

from keras_deeplab.pretrained.convert import (
    assign_state_dict,
    convert_file,
    read_state_dict,
    torch_named_layers,
)
from keras_deeplab.pretrained.hub import download, from_pretrained
from keras_deeplab.pretrained.registry import (
    CHECKPOINTS,
    Architecture,
    Checkpoint,
    get_architecture,
    get_checkpoint,
    list_pretrained,
    register_architecture,
)
from keras_deeplab.pretrained.tf_checkpoint import read_tf_checkpoint, tf_named_layers

__all__ = [
    "CHECKPOINTS",
    "Architecture",
    "Checkpoint",
    "assign_state_dict",
    "convert_file",
    "download",
    "from_pretrained",
    "get_architecture",
    "get_checkpoint",
    "list_pretrained",
    "read_state_dict",
    "read_tf_checkpoint",
    "register_architecture",
    "tf_named_layers",
    "torch_named_layers",
]
