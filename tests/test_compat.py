"""Everything on disk stays readable across issue 34's move to subpackages: a results folder, its
checkpoints (solo and pack), its weights and its records, written by the commit before the move
(tests/fixtures/before-move, see tests/fixtures/README.md), are read by status, inspect and
examine, and the sweep finishes from them; a resumed run equals one trained here from scratch to
float tolerance (the fixtures were written on another machine)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from gatedrnn import RNNConfig, TrainSettings, train
from gatedrnn.data.corpus import PYDOC_TOPICS
from helpers import gatedrnn, results, script

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "before-move"
DONE, SOLO = "b72eba82cd97d32c69ce8fd0ad04fa47f6881d2384cea117a2c115d57cb5d0b2", \
    "c741b94ab5878d4952534860b767febd87172a04b9b7b4c4fa9b2ecd536c3442"


@pytest.fixture
def before(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "sweep")
    return tmp_path / "sweep"


def test_a_folder_written_before_the_move_is_read_and_finished(before):
    status = gatedrnn("status", "--config-file", "rnn_configs.json", cwd=before)
    assert status.returncode == 3 and "done 1" in status.stdout and "pending 3" in status.stdout
    shown = gatedrnn("inspect", f"results_01_all/weights/{DONE}.safetensors", "--json", cwd=before)
    assert shown.returncode == 0 and json.loads(shown.stdout)["id"] == DONE
    ckpt = gatedrnn("inspect", f"results_01_all/checkpoints/{SOLO}.pt", "--json", cwd=before)
    assert ckpt.returncode == 0 and json.loads(ckpt.stdout)["step"] == 29
    proc = script("training_01_all.py", "--config-file", "rnn_configs.json", "--workers", "1", "--threads", "1",
                  "--device", "cpu", cwd=before, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "continuing with its recorded settings" in proc.stdout and "input_init=linear" in proc.stdout
    done = results(before)
    assert len(done) == 4 and {r["status"] for r in done.values()} == {"done"}
    assert all(r["resumes"] == 1 for cid, r in done.items() if cid != DONE)  # the solo run and the pack's two
    # the resumed run against the same run trained here, to float tolerance
    import torch

    torch.set_num_threads(1)
    rec = done[SOLO]
    # the folder recorded no corpus: it was made on the built-in corpus of then, builtin:pydoc_topics
    assert rec["dataset"] == PYDOC_TOPICS and "data=builtin:pydoc_topics" in proc.stdout
    settings = TrainSettings.from_dict({k: v for k, v in rec["settings"].items() if k != "device"}).replace(
        device="cpu", data=PYDOC_TOPICS)
    straight = train(RNNConfig.from_dict({k: v for k, v in rec.items() if k in RNNConfig.__dataclass_fields__}),
                     settings)
    np.testing.assert_allclose(rec["loss"], straight["loss"], rtol=1e-4, atol=1e-5)
    assert rec["val loss"] == pytest.approx(straight["val loss"], rel=1e-4)
    out = script("examine_results_01_all.py", "--out", "plots", "--config-file", "rnn_configs.json", cwd=before,
                 check=True)
    assert "best:" in out.stdout and (before / "plots" / "summary.md").exists()
