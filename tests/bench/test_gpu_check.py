"""The device script stays runnable: it builds its own model and tokenizer and measures with the product's Policy."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT


def test_gpu_check_runs_on_a_small_model_without_network() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "bench.gpu_check", "--small", "--steps", "1", "--samples", "4", "--batch", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["sampling_tok_s"] > 0 and report["train_tok_s"] > 0 and report["teacher_tok_s"] > 0
