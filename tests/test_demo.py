"""The demo trains in a child process, so the serving process never holds training's memory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from bot.registry import Registry

SCRIPT = """
import json, sys
from bot.settings import load_settings
from training.demo import ensure_models_apart
result = ensure_models_apart(load_settings(), sys.argv[1])
print(json.dumps({"result": result, "loaded": sorted(m for m in ("peft", "training.replies", "transformers.trainer")
                                                      if m in sys.modules)}))
"""


def test_missing_models_are_trained_in_a_child_process(tiny_home_template, tiny_lm_dir, reply_csv, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(tiny_home_template / "models" / "intents", home / "models" / "intents")
    Registry(home).register("intents", "v1")
    env = {**os.environ, "SUPPORTBOT_HOME": str(home), "SUPPORTBOT_REPLY_BASE": str(tiny_lm_dir),
           "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(reply_csv)], env=env, capture_output=True, text=True,
                         timeout=1500)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    (intents, version, trained_intents), (replies, new_version, trained_replies) = out["result"]
    assert (intents, version, trained_intents) == ("intents", "v1", False)
    assert replies == "replies" and trained_replies and Registry(home).production_folder("replies").name == new_version
    assert out["loaded"] == []  # training ran (and its libraries were imported) in the child only
    again = subprocess.run([sys.executable, "-c", SCRIPT, str(reply_csv)], env=env, capture_output=True, text=True,
                           timeout=1500)
    assert json.loads(again.stdout.strip().splitlines()[-1])["result"][1] == ["replies", new_version, False]
