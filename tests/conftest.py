import dataclasses
import os

import pytest

from s2emu.recipe import load_recipe


@pytest.fixture(scope="session")
def ray_local():
    """A small real Ray instance for the ray engine tests (no dashboard, 2 CPUs, loopback)."""
    import ray

    from s2emu.engines.ray_engine import start_ray

    started = start_ray(num_cpus=2)
    yield ray
    if started:
        ray.shutdown()


def smoke(**overrides):
    """The bundled smoke recipe with CLI-style overrides (seed, pes, epochs, batch)."""
    return load_recipe("smoke").with_overrides(**overrides)


def with_learning(recipe, **changes):
    return dataclasses.replace(recipe, learning=dataclasses.replace(recipe.learning, **changes))


def with_population(recipe, name, **changes):
    pops = tuple(dataclasses.replace(p, **changes) if p.name == name else p for p in recipe.network.populations)
    return dataclasses.replace(recipe, network=dataclasses.replace(recipe.network, populations=pops))


os.environ.setdefault("RAY_DEDUP_LOGS", "0")


def forget_key(b, pe: int, proj: int):
    """Build `b` with PE `pe` missing the key map entry of its first source in projection `proj`: the PE raises
    PacketError when that source first sends (a routing table and key map that disagree). Returns b."""
    import numpy as np

    km = b.pe_configs[pe]["keymap"]
    keep = np.ones(len(km["keys"]), bool)
    keep[np.flatnonzero(np.asarray(km["proj"]) == proj)[0]] = False
    b.pe_configs[pe]["keymap"] = {k: np.asarray(v)[keep] for k, v in km.items()}
    return b
