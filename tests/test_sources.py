"""The source contract (gatedrnn/sources.py), one test run over every implementation: the byte
corpus and each memory task."""

import math

import pytest
import torch

from gatedrnn import RNNConfig, TrainSettings
from gatedrnn.spec.config import TASK_KEYS, TASKS
from gatedrnn.data.corpus import BUILTIN
from gatedrnn.models.model import ByteModel
from gatedrnn.data.sources import ByteSource, StreamSampler, TaskSource, source_of, stepwise

SETTINGS = TrainSettings.tiny(steps=10, batch_size=3, history=16, val_streams=4, device="cpu")


KEY_VALUES = {"delay": 3, "permute": 1}  # the others 8


def config_of(task: str) -> RNNConfig:
    return RNNConfig(True, True, False, False, True, False, True, n_layers=1, state_size=8, task=task,
                     **({k: KEY_VALUES.get(k, 8) for k in TASK_KEYS[task]} if task != "bytes" else {}))


@pytest.fixture(params=TASKS)
def case(request, tmp_path_factory):
    config = config_of(request.param)
    settings = SETTINGS
    if request.param == "smnist":  # the user's MNIST: a small copy made here
        from test_mnist import write_idx

        folder = tmp_path_factory.mktemp("mnist")
        write_idx(folder, train=20, test=8)
        settings = SETTINGS.replace(data=str(folder))
    return request.param, config, source_of(config, settings)


def test_each_case_is_the_variant_it_names(case):
    task, config, source = case
    assert isinstance(source, ByteSource if task == "bytes" else TaskSource)
    assert source.name == (BUILTIN if task == "bytes" else config.task_label())
    assert len(source.sha256) == 64 and source.ma_from_first_loss is (task != "bytes")


def test_the_sampler_is_seeded_and_restores_its_stream(case):
    _, _, source = case
    a = source.sampler(3, seed=5, device=torch.device("cpu"))
    a.next_offsets()
    state = a.state_dict()
    nxt = a.next_offsets()
    b = source.sampler(3, seed=99, device=torch.device("cpu"))
    b.load_state_dict(state)
    assert torch.equal(b.next_offsets(), nxt)
    first = a.window(nxt)
    again = b.window(nxt)
    assert all(torch.equal(u, v) for u, v in zip(torch.utils._pytree.tree_leaves(first),
                                                 torch.utils._pytree.tree_leaves(again)))


def test_a_window_gives_one_input_and_target_per_step(case):
    task, config, source = case
    sampler = source.sampler(3, seed=1, device=torch.device("cpu"))
    inputs, targets = source.steps(sampler.window(sampler.next_offsets()))
    assert len(inputs) >= source.window_length and len(targets) == source.window_length
    with_target = [t for t in targets if t is not None]
    assert with_target and all(t.shape[0] == 3 for t in with_target)
    if task == "bytes":  # the next byte is the target
        assert all(torch.equal(inputs[j + 1], targets[j]) for j in range(len(targets)))
    model = ByteModel(config)
    out, _ = model.step(inputs[0], model.initial_state(3))
    y = next(t for t in targets if t is not None)
    assert torch.isfinite(source.loss(out, y))


def test_the_held_out_evaluation_is_stepwise_from_zero_states(case):
    task, config, source = case
    model = ByteModel(config)
    heldout = source.heldout(SETTINGS.val_streams, torch.device("cpu"))
    loss, metrics = heldout.evaluate(model)
    assert math.isfinite(loss) and loss == heldout.evaluate(model)[0]  # fixed data, no state kept
    if task == "bytes":
        assert metrics is None and source.bpb(loss) == pytest.approx(loss / math.log(2))
    else:
        assert metrics[source.task.loss_name] == loss and set(source.chance) <= set(metrics)
        assert source.bpb(loss) is None
    assert heldout.probe().shape[0] == 1


def test_stepwise_is_the_models_own_forward():
    model = ByteModel(config_of("bytes"))
    xs = [torch.randint(0, 256, (2,)) for _ in range(5)]
    states = model.initial_state(2)
    for t, out in stepwise(model, xs, 2):
        want, states = model.step(xs[t], states)
        assert torch.equal(out, want)


def test_a_byte_source_refuses_a_corpus_too_short_for_the_history():
    from gatedrnn.data.corpus import DataError, load_corpus

    with pytest.raises(DataError):
        ByteSource(load_corpus(), history=10**9)
    assert StreamSampler.__module__ == "gatedrnn.data.sources"
