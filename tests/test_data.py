import bz2
import gzip
import lzma
import zipfile

import numpy as np
import pytest
import torch

from gatedrnn.data import BUILTIN, DataError, check_length, load_corpus, ngram_cross_entropies, validation_streams
from gatedrnn.sources import StreamSampler

PAYLOAD = bytes(range(256)) * 40 + "naïve text ✓\n".encode() * 100


@pytest.mark.parametrize("suffix, write", [
    (".txt", lambda p, b: p.write_bytes(b)),
    (".gz", lambda p, b: p.write_bytes(gzip.compress(b))),
    (".bz2", lambda p, b: p.write_bytes(bz2.compress(b))),
    (".xz", lambda p, b: p.write_bytes(lzma.compress(b))),
    (".zip", lambda p, b: zipfile.ZipFile(p, "w").writestr("enwik8", b)),
])
def test_every_format_round_trips(tmp_path, suffix, write):
    path = tmp_path / f"corpus{suffix}"
    write(path, PAYLOAD)
    corpus = load_corpus(path)
    assert corpus.data.dtype == np.uint8
    assert bytes(corpus.data) == PAYLOAD
    assert corpus.name == path.name
    assert corpus.sha256 == load_corpus(_plain(tmp_path)).sha256  # the digest is of the bytes, not the file


def _plain(tmp_path):
    p = tmp_path / "plain.bin"
    p.write_bytes(PAYLOAD)
    return p


def test_builtin_corpus_is_the_pydoc_topics():
    corpus = load_corpus()
    assert corpus.name == BUILTIN
    assert 400_000 < len(corpus) < 600_000
    assert b"The " in bytes(corpus.data[:5000])


def test_split_is_disjoint_90_10_and_covers_everything(tmp_path):
    corpus = load_corpus(_plain(tmp_path))
    assert corpus.n_train == int(len(corpus) * 0.9)
    assert len(corpus.train) + len(corpus.val) == len(corpus)
    assert bytes(corpus.train) + bytes(corpus.val) == PAYLOAD


def test_streams_are_contiguous_bytes_of_the_training_split():
    data = np.arange(5000, dtype=np.int64) % 251  # distinct enough to locate every stream
    sampler = StreamSampler(data.astype(np.uint8), batch_size=8, history=20, seed=0, device="cpu")
    offsets = sampler.next_offsets()
    window = sampler.window(offsets)
    assert window.shape == (21, 8) and window.dtype == torch.int64
    for b, off in enumerate(offsets.tolist()):
        assert 0 <= off and off + 20 < 5000
        assert window[:, b].tolist() == (data[off:off + 21]).tolist()
    # same seed, same offsets; generator state restores
    again = StreamSampler(data.astype(np.uint8), 8, 20, seed=0, device="cpu")
    assert torch.equal(again.next_offsets(), offsets)
    state = sampler.state_dict()
    nxt = sampler.next_offsets()
    sampler.load_state_dict(state)
    assert torch.equal(sampler.next_offsets(), nxt)


def test_validation_streams_are_fixed_non_overlapping_slices_of_val():
    val = np.random.default_rng(0).integers(0, 256, 1000).astype(np.uint8)
    w = validation_streams(val, history=99, max_streams=50)
    assert w.shape == (100, 10)
    raw = bytes(val)
    positions = [raw.find(bytes(w[:, k])) for k in range(w.shape[1])]
    assert positions[0] == 0 and all(p >= 0 for p in positions)  # contiguous slices of val
    assert all(b - a >= 100 for a, b in zip(positions, positions[1:]))  # not overlapping
    assert np.array_equal(validation_streams(val, 99, 50), w)  # fixed
    assert validation_streams(val, 99, 4).shape == (100, 4)


@pytest.mark.parametrize("content, words", [
    (None, "no such corpus file"),
    (b"", "empty"),
    (b"x" * 100, "too short"),
])
def test_bad_corpora_are_clear_errors(tmp_path, content, words):
    path = tmp_path / "c.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=words) as e:
        check_length(load_corpus(path), history=1000)
    assert str(path) in str(e.value)


def test_zip_with_two_members_and_a_corrupt_gzip_are_refused(tmp_path):
    z = tmp_path / "two.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("a", b"1")
        f.writestr("b", b"2")
    with pytest.raises(DataError, match="exactly one"):
        load_corpus(z)
    g = tmp_path / "bad.gz"
    g.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="bad.gz"):
        load_corpus(g)


def test_ngram_cross_entropies_fall_with_order_on_text():
    corpus = load_corpus()
    h = ngram_cross_entropies(corpus)
    assert 2.5 < h[1] < 4.5  # English bytes: about 4.7 bits/char unigram
    assert h[1] > h[2] > h[3] > 1.0


def test_ngram_cross_entropy_of_a_deterministic_sequence_is_small(tmp_path):
    # a period-3 sequence is fully predictable from one byte of context
    path = tmp_path / "abc.txt"
    path.write_bytes(b"abc" * 5000)
    h = ngram_cross_entropies(load_corpus(path))
    assert h[1] == pytest.approx(np.log(3), abs=0.01)
    assert h[2] < 0.01 and h[3] < 0.01


def test_the_held_out_part_divides_into_interleaved_validation_and_test_blocks():
    from gatedrnn.data import HELDOUT_BLOCK

    corpus = load_corpus()
    held = corpus.val
    val, test = corpus.heldout("val"), corpus.heldout("test")
    assert len(val) + len(test) == len(held) and len(val) > 0 and len(test) > 0
    b = HELDOUT_BLOCK
    assert np.array_equal(val[:b], held[:b]) and np.array_equal(test[:b], held[b:2 * b])
    assert np.array_equal(val[b:2 * b], held[2 * b:3 * b])  # interleaved: not one contiguous slice
    assert np.array_equal(corpus.train, corpus.data[:corpus.n_train])  # training bytes unchanged
    # before the rule: the whole held-out part validates, and there is no test split
    assert np.array_equal(corpus.heldout("val", "tail"), held) and corpus.heldout("test", "tail") is None
    with pytest.raises(ValueError, match="split rule must be one of"):
        corpus.heldout("val", "random")
