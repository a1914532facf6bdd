"""Sequential MNIST from the user's own copy (gatedrnn/mnist.py, the smnist task): small files
made here in each format (IDX gzipped and not, Keras's .npz), one-line errors, the splits, and a
sweep end to end."""

import gzip
import json

import numpy as np
import pytest
import torch

from gatedrnn import RNNConfig, TrainSettings, train
from gatedrnn.data.mnist import IDX_NAMES, MnistError, load_mnist
from gatedrnn.data.tasks import task_of
from helpers import results, script


def images(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, n).astype(np.uint8)
    return x, y


def idx_bytes(a: np.ndarray) -> bytes:
    magic = 0x00000803 if a.ndim == 3 else 0x00000801
    return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in a.shape) + a.tobytes()


def write_idx(folder, train=40, test=12, gz=False):
    folder.mkdir(parents=True, exist_ok=True)
    (xt, yt), (xs, ys) = images(train, 1), images(test, 2)
    for part, a in zip(IDX_NAMES, (xt, yt, xs, ys)):
        name = IDX_NAMES[part] + (".gz" if gz else "")
        (folder / name).write_bytes(gzip.compress(idx_bytes(a)) if gz else idx_bytes(a))
    return xt, yt, xs, ys


def test_idx_plain_and_gzipped_and_keras_npz_read_to_one_dataset(tmp_path):
    xt, yt, xs, ys = write_idx(tmp_path / "plain")
    write_idx(tmp_path / "gz", gz=True)
    np.savez(tmp_path / "mnist.npz", x_train=xt, y_train=yt, x_test=xs, y_test=ys)
    a, b, c = load_mnist(tmp_path / "plain"), load_mnist(tmp_path / "gz"), load_mnist(tmp_path / "mnist.npz")
    assert a.sha256 == b.sha256 == c.sha256
    assert a.train_images.shape == (40, 784) and np.array_equal(a.train_images[3], xt[3].reshape(-1))
    assert np.array_equal(c.test_labels, ys)


@pytest.mark.parametrize("damage, words", [
    ("missing", "no such file or folder"),
    ("no labels", "no t10k-labels-idx1-ubyte"),
    ("truncated", "bytes of data, its header says"),
    ("magic", "not an IDX file"),
    ("npz key", "no 'y_test' in this .npz"),
    ("not npz", "cannot read as .npz"),
])
def test_a_missing_or_malformed_copy_is_one_line_naming_the_path(tmp_path, damage, words):
    folder = tmp_path / "m"
    write_idx(folder)
    path = folder
    if damage == "missing":
        path = tmp_path / "nowhere"
    elif damage == "no labels":
        (folder / IDX_NAMES["test labels"]).unlink()
    elif damage == "truncated":
        f = folder / IDX_NAMES["train images"]
        f.write_bytes(f.read_bytes()[:-10])
    elif damage == "magic":
        f = folder / IDX_NAMES["train labels"]
        f.write_bytes(b"\x00\x00\x09\x99" + f.read_bytes()[4:])
    elif damage == "npz key":
        path = tmp_path / "k.npz"
        np.savez(path, x_train=np.zeros((2, 28, 28), np.uint8), y_train=np.zeros(2, np.uint8),
                 x_test=np.zeros((1, 28, 28), np.uint8))
    else:
        path = tmp_path / "k.npz"
        path.write_bytes(b"not a zip")
    with pytest.raises(MnistError) as e:
        load_mnist(path)
    assert words in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(MnistError, match="reads MNIST from --data"):
        load_mnist(None)


def test_the_task_trains_on_training_images_validates_on_their_held_out_tenth_and_tests_on_test_images(tmp_path):
    xt, yt, xs, ys = write_idx(tmp_path / "m")
    plain = task_of(RNNConfig(cell="gru", n_layers=1, state_size=4, task="smnist"), str(tmp_path / "m"))
    permuted = task_of(RNNConfig(cell="gru", n_layers=1, state_size=4, task="smnist", permute=1), str(tmp_path / "m"))
    assert plain.steps == 784 and plain.n_train == 36 and plain.mask[-1] and not any(plain.mask[:-1])
    x, y = plain.heldout_set("val", 100)
    assert x.shape == (784, 4, 1) and torch.equal(y[783], torch.from_numpy(yt[36:].astype(np.int64)))
    assert torch.allclose(x[:, 0, 0], torch.from_numpy(xt[36].reshape(-1) / 255.0).float())
    x, y = plain.heldout_set("test", 100)
    assert x.shape[1] == 12 and torch.equal(y[783], torch.from_numpy(ys.astype(np.int64)))
    xp, _ = permuted.heldout_set("test", 100)
    assert not torch.equal(xp, x) and torch.equal(xp.sort(dim=0).values, x.sort(dim=0).values)  # the same pixels
    assert plain.sha256 != permuted.sha256
    r = train(RNNConfig(cell="gru", n_layers=1, state_size=4, task="smnist"),
              TrainSettings.tiny(steps=800, batch_size=2, data=str(tmp_path / "m"), val_streams=4))
    assert r["status"] == "done" and r["time steps"] == 800 and r["optimizer updates"] == 1
    assert set(r["test metrics"]) == {"cross-entropy", "accuracy"} and r["chance"]["accuracy"] == 0.1


def test_a_sweep_of_smnist_runs_end_to_end_from_the_scripts_and_refuses_a_corpus_beside_it(tmp_path):
    write_idx(tmp_path / "m", gz=True)
    script("init_experiments.py", "--tasks", "smnist", "--task-keys", "permute=0,1", "--cells", "gru",
           "--layers", "1", "--state-sizes", "4", cwd=tmp_path, check=True)
    args = ["--data", "m", "--steps", "800", "--batch-size", "2", "--history", "10", "--val-streams", "4",
            "--device", "cpu"]
    proc = script("training_01_all.py", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    done = results(tmp_path)
    assert len(done) == 2 and {r["permute"] for r in done.values()} == {0, 1}
    assert all(r["test loss"] > 0 and r["dataset"].startswith("smnist") for r in done.values())
    recorded = json.loads((tmp_path / "results_01_all/.queue/settings.json").read_text())
    assert recorded["dataset sha256"] == load_mnist(tmp_path / "m").sha256
    script("examine_results_01_all.py", "--out", "out", cwd=tmp_path, check=True)
    # a corpus sweep beside it, or no MNIST: one line, exit 2
    script("init_experiments.py", "--tasks", "bytes", "smnist", "--cells", "gru", "--layers", "1", "--state-sizes", "4",
           "--config-file", "mixed.json", "--results-dir", "mixed", cwd=tmp_path, check=True)
    mixed = script("training_01_all.py", *args, "--config-file", "mixed.json", "--results-dir", "mixed", cwd=tmp_path)
    assert mixed.returncode == 2 and "cannot serve smnist (MNIST) and next-byte prediction" in mixed.stderr
    (tmp_path / "other").mkdir()
    missing = script("training_01_all.py", *[a if a != "m" else "gone" for a in args], "--results-dir", "other",
                     cwd=tmp_path)
    assert missing.returncode == 2 and "gone: no such file or folder" in missing.stderr
