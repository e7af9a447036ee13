"""``supportbot train intents`` unchanged under ``torchrun --nproc_per_node=2`` (DDP, gloo, CPU).

Marked slow: two Python processes importing torch + transformers and a gloo rendezvous take
30-60 s of CPU, more than the fast suite allows. Run with ``pytest -m slow tests/test_intents_ddp.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from training.intents import weights_sha256


@pytest.mark.slow
def test_two_process_training_agrees(tiny_encoder_dir, tiny_intents_csv, isolated_home):
    torchrun, supportbot = shutil.which("torchrun"), shutil.which("supportbot")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [torchrun, "--nproc_per_node=2", "--master_port=29517", "--no-python", supportbot, "train", "intents",
         "--data", str(tiny_intents_csv), "--base", str(tiny_encoder_dir), "--epochs", "2", "--lr", "1e-3",
         "--batch-size", "8", "--head-c", "100"],
        capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    versions = list((isolated_home / "models" / "intents").iterdir())
    assert len(versions) == 1, versions  # one folder: rank 0 chose it, only rank 0 wrote it
    training = json.loads((versions[0] / "manifest.json").read_text())["training"]
    assert training["world_size"] == 2
    rank0, rank1 = training["rank_weight_sha256"]
    assert rank0 == rank1  # both ranks ended with the same weights
    from transformers import AutoModelForSequenceClassification

    assert weights_sha256(AutoModelForSequenceClassification.from_pretrained(versions[0])) == rank0
