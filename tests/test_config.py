import hashlib
import json

import pytest

from gatedrnn import RNNConfig, TrainSettings, config_id
from gatedrnn.spec.config import CONFIG_KEYS, SWITCHES
from gatedrnn.spec.grid import default_grid

ALL_ON = dict(zip(SWITCHES, [True] * 7), n_layers=3, state_size=256)


def test_id_is_sha256_of_sorted_json_without_id():
    d = dict(ALL_ON)
    expected = hashlib.sha256(json.dumps(d, sort_keys=True).encode("utf-8")).hexdigest()
    assert config_id(d) == expected
    assert config_id({**d, "id": "whatever"}) == expected
    assert RNNConfig.from_dict(d).id == expected


@pytest.mark.parametrize("d, pinned", [
    (ALL_ON, "49dcbda27269d37059627d966eff5981c9c463f4e6d289964eeecf63bf64c65c"),
    ({**dict(zip(SWITCHES, [False] * 7)), "use_new_state": True, "use_residual": True,
      "n_layers": 1, "state_size": 32},
     "3901104d4af6a5b15f528c12bfe64f78cab96f51530d2e2f3e4a0fe7bd2801e9"),
    ({**dict(zip(SWITCHES, [False] * 7)), "use_old_state": True, "n_layers": 1, "state_size": 256},
     "b06564bde352c72dfc0532748b73851fdee97b8aa0c94030d8bf0fd031adcbfa"),
])
def test_pinned_ids_never_change(d, pinned):
    assert RNNConfig.from_dict(d).id == pinned


def test_default_grid_has_432_distinct_ids_and_follows_the_rule():
    grid = default_grid()
    assert len(grid) == 432
    assert len({c.id for c in grid}) == 432
    assert all(c.use_new_state or c.use_old_state for c in grid)
    assert all(c.use_residual for c in grid if c.state_size < 256)
    assert {c.n_layers for c in grid} == {1, 2, 3}
    assert {c.state_size for c in grid} == {32, 256}


def test_round_trip_and_key_order_does_not_matter():
    c = RNNConfig.from_dict(ALL_ON)
    assert RNNConfig.from_dict(c.to_dict()) == c
    shuffled = dict(reversed(list(c.to_dict(with_id=True).items())))
    assert RNNConfig.from_dict(shuffled).id == c.id
    assert list(c.to_dict()) == list(CONFIG_KEYS)  # the nine-key form by default


def test_seed_is_part_of_the_id_only_when_swept():
    c = RNNConfig.from_dict(ALL_ON)
    s = RNNConfig.from_dict({**ALL_ON, "seed": 3})
    assert "seed" not in c.to_dict() and s.to_dict()["seed"] == 3
    assert c.id != s.id


@pytest.mark.parametrize("change, error, words", [
    ({"use_bogus": True}, ValueError, "use_bogus"),
    ({"use_input_gate": 1}, TypeError, "use_input_gate"),
    ({"n_layers": "2"}, TypeError, "n_layers"),
    ({"n_layers": True}, TypeError, "n_layers"),
    ({"n_layers": 0}, ValueError, "n_layers"),
    ({"state_size": -5}, ValueError, "state_size"),
    ({"use_new_state": False, "use_old_state": False}, ValueError, "use_new_state"),
    ({"id": "0" * 64}, ValueError, "does not match"),
])
def test_bad_configs_are_refused_with_the_key_named(change, error, words):
    with pytest.raises(error, match=words):
        RNNConfig.from_dict({**ALL_ON, **change})


def test_missing_key_is_named():
    d = dict(ALL_ON)
    del d["state_size"]
    with pytest.raises(ValueError, match="state_size"):
        RNNConfig.from_dict(d)


def test_input_init_is_checked_and_applies_only_where_the_input_map_is_trained():
    sw = dict(zip(SWITCHES, (False, False, False, False, True, False, True)))
    assert RNNConfig(**sw, input_init="normal").short().endswith("in:normal")
    assert "input_init" not in RNNConfig(**sw).to_dict()  # not swept: the id of before
    with pytest.raises(ValueError, match="input_init must be one of linear, normal"):
        RNNConfig(**sw, input_init="zeros")
    with pytest.raises(ValueError, match="does not apply to the esn cell"):
        RNNConfig(cell="esn", input_init="linear")
    with pytest.raises(ValueError, match="does not apply to task 'adding'"):
        RNNConfig(**sw, task="adding", input_init="linear")
    assert RNNConfig(**sw, task="copy", input_init="normal").input_init == "normal"  # symbols: an embedding
    assert TrainSettings().input_init == "linear" and TrainSettings().split == "windows"
    # settings recorded before issue 30 (and before the split rule) read as what they were made with
    old = TrainSettings.from_dict({k: v for k, v in TrainSettings().to_dict().items() if k not in ("split", "input_init")})
    assert old.input_init == "normal" and old.split == "tail"
    with pytest.raises(ValueError, match="input_init"):
        TrainSettings(input_init="uniform")


def test_train_settings_defaults_and_validation():
    s = TrainSettings()
    assert (s.steps, s.batch_size, s.history, s.lr, s.log_every) == (10_000, 256, 1000, 1e-3, 50)
    assert TrainSettings.from_dict(s.to_dict()) == s
    for bad, err in [({"steps": 0}, ValueError), ({"lr": -1.0}, ValueError), ({"lr": float("nan")}, ValueError),
                     ({"device": "gpu"}, ValueError), ({"batch_size": 2.5}, TypeError)]:
        with pytest.raises(err):
            TrainSettings(**bad)
    with pytest.raises(ValueError, match="nonsense"):
        TrainSettings.from_dict({"nonsense": 1})


def test_public_api_is_exported():
    import gatedrnn

    for name in ["RNNConfig", "TrainSettings", "GatedLayer", "GatedRNN", "ByteModel", "train", "train_pack",
                 "PackedModel", "results"]:
        assert name in gatedrnn.__all__ and hasattr(gatedrnn, name)
    assert callable(gatedrnn.analysis.results.load)
