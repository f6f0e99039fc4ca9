"""Precision "auto" (keras_deeplab.training.precision): mixed_bfloat16 on a CPU-only backend
whose CPU has avx512_bf16 / amx_bf16, float32 otherwise; accepted by the config, the CLI and
the demo; the policy it sets is the one models built afterwards use; a bf16 model still
exports to TFLite."""

import argparse

import keras
import numpy as np
import pytest

from keras_deeplab.training import config as C
from keras_deeplab.training import precision as P

# /proc/cpuinfo excerpts, written by hand in the kernel's format (one block per logical CPU).
ZEN4 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9xx4
flags\t\t: fpu vme sse sse2 avx avx2 fma avx512f avx512dq avx512_bf16 avx512_vnni
"""
SAPPHIRE_RAPIDS = """processor\t: 0
flags\t\t: fpu sse2 avx2 avx512f avx512_vnni amx_bf16 amx_tile amx_int8
"""
ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
flags\t\t: fpu vme sse sse2 avx avx2 fma bmi2
processor\t: 1
flags\t\t: fpu vme sse sse2 avx avx2 fma bmi2
"""
# A flag *name* elsewhere in the text (not in a flags line) must not count.
DECOY = """processor\t: 0
model name\t: avx512_bf16 amx_bf16
flags\t\t: fpu sse2 avx2
"""


@pytest.fixture
def cpu(monkeypatch):
    """Fakes /proc/cpuinfo and a CPU-only backend; returns a setter for the text."""
    state = {"text": ""}
    monkeypatch.setattr(P, "_read_cpuinfo", lambda: state["text"])
    monkeypatch.setattr(P, "_has_accelerator", lambda: False)

    def set_text(text):
        state["text"] = text
        P.cpu_supports_bf16.cache_clear()

    yield set_text
    P.cpu_supports_bf16.cache_clear()


@pytest.fixture
def restore_policy():
    previous = keras.config.dtype_policy().name
    yield
    keras.config.set_dtype_policy(previous)


@pytest.mark.parametrize("text, expected", [(ZEN4, "mixed_bfloat16"),
                                            (SAPPHIRE_RAPIDS, "mixed_bfloat16"),
                                            (ZEN3, "float32"), (DECOY, "float32"),
                                            ("", "float32")])
def test_auto_follows_the_cpu_flags(cpu, text, expected):
    cpu(text)
    assert P.resolve_precision("auto") == expected
    assert P.cpu_supports_bf16() == (expected == "mixed_bfloat16")


def test_auto_is_float32_with_an_accelerator_and_explicit_names_pass_through(cpu, monkeypatch):
    cpu(ZEN4)
    monkeypatch.setattr(P, "_has_accelerator", lambda: True)
    assert P.resolve_precision("auto") == "float32"
    for name in ("float32", "mixed_float16", "mixed_bfloat16"):
        assert P.resolve_precision(name) == name
    with pytest.raises(ValueError, match="float16.*expected one of"):
        P.resolve_precision("float16")


def test_cpuinfo_is_read_once_and_not_at_all_off_linux(monkeypatch):
    calls = []
    monkeypatch.setattr(P, "_read_cpuinfo", lambda: calls.append(1) or ZEN4)
    P.cpu_supports_bf16.cache_clear()
    try:
        assert P.cpu_supports_bf16() and P.cpu_supports_bf16()
        assert len(calls) == 1
    finally:
        P.cpu_supports_bf16.cache_clear()
    monkeypatch.undo()
    monkeypatch.setattr(P.sys, "platform", "darwin")
    assert P._read_cpuinfo() == ""


def test_set_precision_auto_sets_the_resolved_policy_for_models_built_after(cpu, restore_policy):
    from keras_deeplab.models import DeepLabV3Plus

    cpu(ZEN4)
    keras.config.set_dtype_policy("float32")
    assert P.set_precision("auto") == "float32"  # returns the previous policy
    assert keras.config.dtype_policy().name == "mixed_bfloat16"
    model = DeepLabV3Plus(num_classes=3, backbone="resnet18",
                          backbone_kwargs={"base_filters": 8}, aspp_filters=8,
                          decoder_filters=8, low_level_filters=8)
    assert model.dtype_policy.name == "mixed_bfloat16"
    assert model.get_layer("aspp").compute_dtype == "bfloat16"
    y = model(np.zeros((1, 32, 32, 3), "float32"))
    assert keras.backend.standardize_dtype(y.dtype) == "float32"  # logits stay float32
    cpu(ZEN3)
    P.set_precision("auto")
    assert keras.config.dtype_policy().name == "float32"


def test_auto_is_accepted_by_the_config_the_train_cli_and_the_demo():
    from keras_deeplab import demo

    assert "auto" in C.PRECISIONS and C.OptimConfig(precision="auto").precision == "auto"
    parser = C.add_train_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--synthetic", "--precision", "auto"])
    assert C.run_config_from_args(args).optim.precision == "auto"
    assert demo.parse_args(["--precision", "auto"]).precision == "auto"
    with pytest.raises(SystemExit):
        demo.parse_args(["--precision", "bf16"])


def test_a_bfloat16_model_exports_to_tflite_with_float32_kernels(rng, tmp_path, restore_policy):
    """TFLite has no bf16 kernels: the export converts the model's float32 copy. Reference:
    the same architecture and weights built under float32, run by Keras."""
    from ai_edge_litert.interpreter import Interpreter

    import keras_deeplab as kd

    def build():
        return kd.models.DeepLabV3Plus(num_classes=3, backbone="resnet18",
                                       backbone_kwargs={"base_filters": 8}, aspp_filters=8,
                                       decoder_filters=8, low_level_filters=8)

    keras.config.set_dtype_policy("float32")
    reference = build()
    keras.config.set_dtype_policy("mixed_bfloat16")
    bf16 = build()
    bf16.set_weights(reference.get_weights())
    info = kd.export.tflite(bf16, str(tmp_path / "m.tflite"), input_size=(32, 32),
                            verbose=False)
    assert info["input"]["dtype"] == "float32"
    interpreter = Interpreter(model_path=str(tmp_path / "m.tflite"))  # LiteRT, independent
    interpreter.allocate_tensors()
    image = rng.uniform(0, 255, size=(1, 32, 32, 3)).astype("float32")
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    keras.config.set_dtype_policy("float32")
    ref = keras.ops.convert_to_numpy(reference(image))
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    assert bf16.dtype_policy.name == "mixed_bfloat16"  # the model itself is left as it was


def test_a_run_records_auto_and_the_policy_it_resolved_to(cpu, tmp_path, restore_policy):
    from keras_deeplab.training import experiment
    from keras_deeplab.training.manifest import read_manifest

    cpu(ZEN4)
    keras.config.set_dtype_policy("float32")
    config = C.RunConfig(
        data=C.DataConfig("synthetic", num_classes=3, synthetic=True, synthetic_images=4,
                          image_size=32),
        model=C.ModelConfig("fcn"), optim=C.OptimConfig(epochs=1, precision="auto"),
        runs_dir=str(tmp_path), run_name="run", tensorboard=False, verbose=0)
    summary = experiment.train(config)
    manifest = read_manifest(summary["run_dir"])
    assert manifest["config"]["optim"]["precision"] == "auto"
    assert manifest["model"]["dtype_policy"] == "mixed_bfloat16"
    assert summary["model"].dtype_policy.name == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
