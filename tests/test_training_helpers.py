"""Shared helpers for the training tests (no tests here): run code in a fresh interpreter."""

import json
import os
import subprocess
import sys
import textwrap


def run_python(code, timeout=300, env=None, cwd=None):
    """Runs `code` in a fresh interpreter; returns the JSON printed on its last stdout line."""
    full_env = dict(os.environ)
    full_env.setdefault("KERAS_BACKEND", "tensorflow")
    full_env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    full_env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
         full_env.get("PYTHONPATH", "")])
    if env:
        full_env.update(env)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, env=full_env, cwd=cwd)
    if proc.returncode != 0:
        raise AssertionError(f"subprocess failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-5000:]}")
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    return json.loads(lines[-1])
