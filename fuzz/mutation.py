"""Which mutation an input gets: graph-aware (it still loads), damaging, or both.

80% of the inputs get graph-aware mutations (``graph_mutator``) that keep the model
loadable; 15 points of those get a damaging mutation (``damage``) on top; the other 20%
are damaged only. A graph-aware mutation of an input that no longer loads starts again
from a pristine seed half of the time. A quarter of the graph-aware mutants are then
passed through a deployment tool (``post_tools``: onnxsim, symbolic shape inference,
ONNX Runtime's offline optimisation, ...): the first of two tools drawn that applies.
"""

from __future__ import annotations

import random

from damage import damage
from packing import pack, unpack
from target import STATS

#: Pristine seeds (fuzz/corpus): a graph-aware mutation of an input that no longer loads
#: starts again from one of them half of the time.
SEEDS: list[bytes] = []
GRAPH_ONLY, GRAPH_THEN_DAMAGE = 0.65, 0.15  # shares of the inputs; the rest: damage only
POST_PROCESSED = 0.25  # share of the graph-aware mutants passed through a deployment tool


def mutate(data: bytes, max_size: int, seed: int, byte_mutate=None) -> bytes:
    """Graph-aware (loadable) mutation for 80% of the inputs, 15 points of them damaged
    further; damage only (a field, or bytes) for the rest."""
    rng = random.Random(seed)
    r = rng.random()
    if r < GRAPH_ONLY + GRAPH_THEN_DAMAGE:
        mutant = _graph_mutate(data, rng)
        if mutant is not None:
            return mutant if r < GRAPH_ONLY else damage(mutant, rng, byte_mutate)
    return damage(data, rng, byte_mutate)


def _graph_mutate(data: bytes, rng: random.Random) -> bytes | None:
    import graph_mutator  # imports hubert_fix: not before atheris instruments it (target.import_project)

    model_bytes, side = unpack(data)
    mutant = graph_mutator.mutate(model_bytes, rng)
    if mutant is None and SEEDS and rng.random() < 0.5:
        model_bytes, side = unpack(rng.choice(SEEDS))
        mutant = graph_mutator.mutate(model_bytes, rng)
    if mutant is not None and rng.random() < POST_PROCESSED:
        mutant = post_process(mutant, side, rng)
    return None if mutant is None else pack(mutant, side)


def post_process(model: bytes, side: bytes | None, rng: random.Random) -> bytes:
    """``model`` after the first of two deployment tools drawn that applies, or as it is;
    ``STATS`` counts how often each tool was tried and applied."""
    import post_tools  # imports hubert_fix, as graph_mutator does

    for tool in rng.sample(post_tools.TOOLS, 2):
        STATS.post_tried[tool] = STATS.post_tried.get(tool, 0) + 1
        out = post_tools.run(tool, model, side)
        if out is not None:
            STATS.post_applied[tool] = STATS.post_applied.get(tool, 0) + 1
            return out
    return model
