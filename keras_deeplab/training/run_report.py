"""What a training run leaves for a reader: a per-epoch CSV, a training-curve PNG, report.md.

Every run of `kd.training.fit` (so ``keras-deeplab train`` and the recipes too) gets, in its
run directory:

    history.csv          one row per epoch (`EpochCSVLogger`, a `keras.callbacks.CSVLogger`
                         whose columns include the validation metrics also on epochs
                         without validation: empty there); a resumed run keeps the rows
                         of the epochs before the one it restarts from, a run started
                         again (``overwrite``) begins a new file
    training_curve.png   loss and mIoU per epoch (`plot_training_curves`; needs matplotlib,
                         the ``plot`` extra: without it the report says the figure is missing)
    report.md            the run in a few lines: what was trained, the last and best
                         validation mIoU, the last per-class IoU, the files (`RunReport`)

and the console gets one compact line per epoch (`EpochLine`: loss, mIoU, validation mIoU,
seconds) instead of Keras' progress bar, which would print every per-class IoU entry each
epoch; the per-class table is printed when validation runs (`EvaluateMeanIoU`).

`plot_training_curves` and `markdown_table` are also what the demo's figure and report use
(`keras_deeplab/demo.py`).
"""

from __future__ import annotations

import csv
import math
import os
import time

import keras

from keras_deeplab.provenance import atomic_path

HISTORY_CSV, CURVE_PNG, REPORT_MD = "history.csv", "training_curve.png", "report.md"


def markdown_table(header, rows):
    """A Markdown table: ``header`` (list of str) and ``rows`` (lists of cell values)."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


def _number(text):
    try:
        value = float(text)
    except (TypeError, ValueError):
        return math.nan
    return value


def read_history_csv(path):
    """The columns of a `history.csv` as ``{name: [float per epoch]}`` (NaN where empty),
    with ``"epoch"`` counted from 1; the last row of an epoch written twice (a resumed
    run) wins. Returns {} for a missing file."""
    if not os.path.isfile(path):
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    by_epoch = {}
    for row in rows:
        if row.get("epoch") in (None, "", "epoch"):
            continue
        by_epoch[int(float(row["epoch"]))] = row
    epochs = sorted(by_epoch)
    keys = []
    for e in epochs:
        keys += [k for k in by_epoch[e] if k not in keys and k != "epoch"]
    history = {"epoch": [e + 1 for e in epochs]}
    for key in keys:
        history[key] = [_number(by_epoch[e].get(key)) for e in epochs]
    return history


def plot_training_curves(history, path, baselines=None, title=None):
    """Training loss (left) and mIoU (right) per epoch, saved as a PNG.

    Args:
        history: dict of per-epoch lists (``keras.callbacks.History.history`` or
            `read_history_csv`): "loss" and "val_loss" on the left; "miou" and "val_miou"
            on the right (NaN entries, epochs without validation, are skipped). An
            "epoch" list (from 1) gives the x axis; else 1..N.
        path: str. The PNG.
        baselines: dict name -> mIoU drawn as horizontal lines (the demo's baselines).
        title: str or None. Figure title.

    Raises:
        ImportError: matplotlib is not installed (``pip install 'keras_deeplab[plot]'``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    n = len(history.get("loss", []))
    epochs = np.asarray(history.get("epoch") or range(1, n + 1), float)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("loss", "train loss"), ("val_loss", "val loss")):
        if history.get(key):
            ax1.plot(epochs, history[key], "o-", label=label)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend()
    for key, label in (("miou", "train mIoU (running)"), ("val_miou", "val mIoU")):
        values = np.asarray(history.get(key) or [], float)
        if values.size and np.isfinite(values).any():
            ok = np.isfinite(values)
            ax2.plot(epochs[: values.size][ok], values[ok], "o-", label=label)
    for i, (name, value) in enumerate((baselines or {}).items()):
        ax2.axhline(value, linestyle="--", label=f"{name} (test, final)",
                    color=("gray", "tab:orange", "tab:green")[i % 3])
    ax2.set_ylim(0, 1)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("mIoU")
    if ax2.get_legend_handles_labels()[0]:
        ax2.legend(loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


class EpochCSVLogger(keras.callbacks.CSVLogger):
    """`keras.callbacks.CSVLogger` (appending, so a resumed run continues its file, minus
    the rows of the epochs it repeats; a run from epoch 0 starts the file again) whose
    columns always include ``expected_keys``: Keras fixes the columns at the first epoch, and
    validation metrics that first appear on a later epoch (validation every N epochs) would
    be dropped. Epochs without a value leave the cell empty."""

    def __init__(self, filename, expected_keys=()):
        super().__init__(filename, append=True)
        self.expected_keys = list(expected_keys)

    def on_train_begin(self, logs=None):
        self._first = True
        super().on_train_begin(logs)

    def on_epoch_begin(self, epoch, logs=None):
        if getattr(self, "_first", False):  # rows from this epoch on are written again
            self._first = False
            self._drop_rows_from(epoch)

    def _drop_rows_from(self, epoch):
        """Keeps the rows of the epochs before ``epoch``: a run started again from epoch 0
        (``overwrite``) starts a new file, a resumed run drops the rows of the epochs it
        repeats."""
        self.csv_file.close()
        kept = []
        if os.path.isfile(self.filename):
            with open(self.filename, newline="") as f:
                rows = list(csv.reader(f))
            if rows:
                kept = [rows[0]] + [r for r in rows[1:] if r and int(float(r[0])) < epoch]
        if len(kept) > 1:
            with atomic_path(self.filename) as tmp, open(tmp, "w", newline="") as f:
                csv.writer(f).writerows(kept)
        elif os.path.isfile(self.filename):
            os.remove(self.filename)
        self.append_header = len(kept) <= 1
        self.csv_file = open(self.filename, "a", newline="")
        self.writer = None

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        for key in self.expected_keys:
            logs.setdefault(key, "")
        super().on_epoch_end(epoch, logs)


def _fmt(value, digits=4):
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def write_run_report(run_dir, config=None, class_names=None, status="running"):
    """Writes ``report.md`` (and ``training_curve.png``) of a run from its ``history.csv``.

    Args:
        run_dir: str. The run directory.
        config: dict or None. The run's config (`RunConfig.to_dict`), summarised on top.
        class_names: list of str or None. Names of the per-class IoU columns.
        status: str. "running", "finished" or "failed".

    Returns:
        str: the report's path.
    """
    history = read_history_csv(os.path.join(run_dir, HISTORY_CSV))
    curve = os.path.join(run_dir, CURVE_PNG)
    figure = None
    if history.get("loss"):
        try:
            plot_training_curves(history, curve, title=os.path.basename(os.path.normpath(run_dir)))
            figure = CURVE_PNG
        except ImportError:
            figure = None
    lines = [f"# Run {os.path.basename(os.path.normpath(run_dir))}", "", f"Status: {status}."]
    if isinstance(config, dict) and "model" in config and "data" in config:
        m, d, o = config["model"], config["data"], config.get("optim", {})
        tiny = " (tiny widths, untrained smoke run)" if m.get("tiny") else ""
        fake = " (--synthetic fake tree)" if d.get("synthetic") else ""
        lines += ["", f"Model: {m.get('model')} / {m.get('backbone') or 'no backbone'}, output "
                  f"stride {m.get('output_stride')}{tiny}. Data: {d.get('dataset')}{fake}, "
                  f"{d.get('num_classes')} classes, crop {d.get('crop_size')}, batch "
                  f"{d.get('batch_size')}. Optimisation: {o.get('epochs')} epochs, lr "
                  f"{o.get('base_lr')}, loss {o.get('loss')}."]
    epochs = history.get("epoch", [])
    if epochs:
        loss = history.get("loss", [math.nan])
        lines += ["", f"Epochs done: {len(epochs)}; training loss {_fmt(loss[0])} -> "
                  f"{_fmt(loss[-1])}."]
        val = history.get("val_miou")
        if val and any(math.isfinite(v) for v in val):
            scored = [(v, e) for v, e in zip(val, epochs) if math.isfinite(v)]
            best, best_epoch = max(scored)
            lines.append(f"Validation mIoU: last {_fmt(scored[-1][0])} (epoch {scored[-1][1]}), "
                         f"best {_fmt(best)} (epoch {best_epoch}).")
            prefix = "val_iou_"
            per_class = [(k[len(prefix):], history[k]) for k in history if k.startswith(prefix)]
            if per_class:
                last = [i for i, v in enumerate(val) if math.isfinite(v)][-1]
                lines += ["", f"Per-class IoU at epoch {epochs[last]}:", "",
                          markdown_table(["class", "IoU"],
                                         [[name, _fmt(values[last])]
                                          for name, values in per_class])]
        else:
            lines.append("No validation yet.")
    files = [f for f in (HISTORY_CSV, figure, "best.keras", "last.keras", "manifest.json")
             if f and os.path.exists(os.path.join(run_dir, f))]
    lines += ["", "Files: " + ", ".join(f"`{f}`" for f in files) + "."]
    if figure is None and history.get("loss"):
        lines.append("(No training_curve.png: matplotlib is not installed; "
                     "pip install 'keras_deeplab[plot]'.)")
    path = os.path.join(run_dir, REPORT_MD)
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


class RunReport(keras.callbacks.Callback):
    """Rewrites ``report.md`` and ``training_curve.png`` from ``history.csv`` after every
    epoch and at the end of training (`write_run_report`). Put it after `EpochCSVLogger`."""

    def __init__(self, run_dir, config=None, class_names=None):
        super().__init__()
        self.run_dir, self.config, self.class_names = run_dir, config, class_names

    def on_epoch_end(self, epoch, logs=None):
        write_run_report(self.run_dir, self.config, self.class_names)

    def on_train_end(self, logs=None):
        write_run_report(self.run_dir, self.config, self.class_names, status="finished")


class EpochLine(keras.callbacks.Callback):
    """One compact console line per epoch: loss, training mIoU, validation mIoU and pixel
    accuracy when validation ran, seconds. Per-class values stay in ``history.csv``."""

    KEYS = (("loss", "loss"), ("miou", "mIoU"), ("val_miou", "val mIoU"),
            ("val_pixel_accuracy", "val pixel acc"))

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        total = (self.params or {}).get("epochs")
        parts = [f"epoch {epoch + 1}" + (f"/{total}" if total else "")]
        for key, label in self.KEYS:
            value = logs.get(key)
            if value is None and key == "miou":  # aux-head models log logits_miou
                value = logs.get("logits_miou")
            if value is not None:
                parts.append(f"{label} {float(value):.4f}")
        parts.append(f"{time.time() - getattr(self, '_start', time.time()):.0f} s")
        print(" - ".join(parts), flush=True)


def run_callbacks(run_dir, callbacks=(), config=None, class_names=None, verbose=1):
    """The reporting callbacks `kd.training.training_callbacks` appends: `EpochCSVLogger`
    (expecting the validation keys of any `EvaluateMeanIoU` in ``callbacks``), `RunReport`
    and, with ``verbose``, `EpochLine`."""
    from keras_deeplab.training.evaluate_mean_iou import EvaluateMeanIoU

    expected = []
    for cb in callbacks:
        if isinstance(cb, EvaluateMeanIoU):
            n = len(cb.class_names) if cb.class_names else None
            expected += [f"{cb.prefix}miou", f"{cb.prefix}pixel_accuracy"]
            if n:
                expected += cb.log_keys(n)
    out = [EpochCSVLogger(os.path.join(run_dir, HISTORY_CSV), expected),
           RunReport(run_dir, config=config, class_names=class_names)]
    if verbose:
        out.append(EpochLine())
    return out
