"""The demo's exit status follows its targets (no training: `run` is replaced)."""

from keras_deeplab import demo


def _results(dl=0.878, fcn=0.52, px=0.107, int8_delta=-0.03, sm=1.0):
    model = lambda miou: {"test_miou": miou, "train_loss": [1.0, 0.5]}  # noqa: E731
    return {"deeplabv3plus": model(dl), "fcn": model(fcn), "pixel": model(px),
            "exports": {"keras_miou": dl, "tflite_int8_miou": dl + int8_delta / 100,
                        "saved_model_argmax_agreement": sm,
                        "tflite_int8_miou_delta_points": int8_delta},
            "crf": {"miou_before": dl, "miou_after": dl + 0.04}}


def test_check_targets_flags_each_missed_target():
    ok = demo.check_targets(_results(), quick=False)
    assert len(ok) == 8 and all(met for met, _ in ok.values())
    low = demo.check_targets(_results(dl=0.80, fcn=0.85), quick=False)
    missed = sorted(k for k, (met, _) in low.items() if not met)
    assert missed == ["deeplabv3plus_miou_ge_0.85", "pixel_lt_fcn_lt_deeplabv3plus"]
    int8 = demo.check_targets(_results(int8_delta=-1.5, sm=0.99), quick=True)
    assert sorted(k for k, (met, _) in int8.items() if not met) == [
        "saved_model_agreement_ge_0.999"]  # quick mode: pipeline targets only
    assert len(int8) == 4


def test_main_exits_non_zero_naming_the_missed_target(monkeypatch, capsys, tmp_path):
    def fake_run(args, dl):
        targets = demo.check_targets(_results(dl=dl), quick=args.quick)
        return {"targets": {k: met for k, (met, _) in targets.items()},
                "target_details": {k: {"met": met, "measured": what}
                                   for k, (met, what) in targets.items()}}

    monkeypatch.setattr(demo, "run", lambda args: fake_run(args, 0.80))
    assert demo.main(["--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "target NOT met: deeplabv3plus_miou_ge_0.85 (DeepLabv3+ test mIoU 0.8000)" in err
    monkeypatch.setattr(demo, "run", lambda args: fake_run(args, 0.88))
    assert demo.main(["--out", str(tmp_path)]) == 0
