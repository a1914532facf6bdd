"""Pack sizes (gatedrnn/packing.py): the one place that decides them."""

from gatedrnn import RNNConfig
from gatedrnn.spec.grid import default_grid
from gatedrnn.spec.packing import DEFAULT_PACK, pack_chunk, pack_group, plan_packs

GRID = [c.to_dict(with_id=True) for c in default_grid()]


def test_without_pack_a_cpu_packs_small_states_and_a_gpu_everything():
    cpu, gpu = plan_packs(None, "cpu"), plan_packs(None, "cuda")
    assert cpu.limit == gpu.limit == DEFAULT_PACK
    small = next(c for c in GRID if c["state_size"] == 32)
    large = next(c for c in GRID if c["state_size"] == 256)
    assert cpu.group(small) == ("gated", small["n_layers"], 32) and cpu.group(large) is None
    assert gpu.group(large) == ("gated", large["n_layers"], 256)
    assert plan_packs(None, "mps").limit == 1


def test_a_given_pack_is_kept_and_packs_every_packable_configuration():
    plan = plan_packs(4, "cpu", workers=8, configs=GRID)
    large = next(c for c in GRID if c["state_size"] == 256)
    assert plan.limit == 4 and plan.group(large) is not None
    assert plan_packs(1, "cuda").limit == 1


def test_several_workers_share_the_largest_group():
    # the default grid's CPU-packed groups: L1..L3 at state 32, 48 configurations each
    assert plan_packs(None, "cpu", workers=2, configs=GRID).limit == 24
    assert plan_packs(None, "cpu", workers=7, configs=GRID).limit == 7  # ceil(48 / 7)
    assert plan_packs(None, "cuda", workers=2, configs=GRID).limit == 48  # groups of 96 at state 256
    assert plan_packs(None, "cpu", workers=100, configs=GRID).limit == 2  # never a pack of one


def test_what_is_never_packed_and_the_chunks():
    assert pack_group(RNNConfig(cell="gru", n_layers=1, state_size=8)) is None
    assert pack_group(RNNConfig(False, True, False, True, True, False, True, n_layers=1, state_size=8, bptt=3)) is None
    assert plan_packs(None, "cpu").group({"not": "a configuration"}) is None
    assert pack_chunk("cuda", 32, 256) is None
    assert pack_chunk("cpu", 32, 256) == 6 and pack_chunk("cpu", 256, 256) == 2
