"""frozen-batch: find a batch the trace fixed at 1 while the inputs still declare it dynamic.

An export traced with one utterance can bake batch 1 into the graph (the dynamo
exporter specializes a dim whose example size is 1; reshapes to ``[1, heads, -1, d]``
follow) while ``source`` keeps a symbolic batch. Such a model runs at batch 1 and fails,
or mixes utterances, at batch 2. Nothing in the graph says how the batch should flow,
so this pass cannot repair it; it reports it, and ``repair`` refuses (exit 3).
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from hubert_fix.analysis.dims import GraphFacts
from hubert_fix.passes.contract import Declined, RewritePass, Scope


class FrozenBatch(RewritePass):
    """Refuse a graph whose output batch is a static 1 while an input's batch is dynamic.

    Candidate: a graph output of rank >= 2 whose axis 0 is proven to be 1 (declared, or
    found by shape inference, e.g. from a ``Reshape`` to a constant ``[1, ...]``), in a
    model whose inputs of rank >= 2 all have a dynamic axis 0 (a symbol, or unnamed): no
    input says that 1 is the batch.

    Declined, blocking: the output cannot follow the input's batch. The next step is to
    re-export tracing a batch of 2 (so no dim of the example is 1), or, to deploy at
    batch 1 only, to declare the inputs' batch static 1
    (``onnx.tools.update_model_dims``), which makes the interface honest.

    Before::

        source [batch, samples] -> ... Reshape(x, [1, 4, -1, 8]) ... -> features [1, frames, 32]

    After: unchanged (nothing to rewrite; the report says why).
    """

    name = "frozen-batch"

    def match(self, scope: Scope) -> list[Declined | None]:
        """Only refusals: nothing here can be proven or planned."""
        facts = scope.facts
        batched = [t for t in scope.graph.inputs if (facts.rank(t) or 0) >= 2]
        dynamic = all(not isinstance(facts.shape(t)[0], int) for t in batched)
        return [_examine(out, batched[0], facts) for out in scope.graph.outputs] if batched and dynamic else []


def _examine(output: gs.Tensor, batched: gs.Tensor, facts: GraphFacts) -> Declined | None:
    """An output whose batch is a proven 1 cannot follow the input's dynamic batch: refused."""
    shape = facts.shape(output)
    # The output's own declaration counts too: facts take no dims from declarations (a
    # tool's claims), but an export that declares batch 1 against a dynamic input batch
    # contradicts itself, and a contradiction is reason enough to refuse.
    declared = output.shape
    pinned = [dims for dims in (shape, declared) if dims is not None and len(dims) >= 2 and dims[0] == 1]
    if not pinned:
        return None
    return Declined(
        node=output.name,
        op="output",
        reason=(
            f"output {output.name} [{', '.join(map(str, pinned[0]))}] has batch 1 fixed in the graph, while input "
            f"{batched.name} {facts.describe(batched)} declares a dynamic batch: the trace fixed the batch "
            "(traced with one utterance), so batch 2 and up fail or mix utterances; re-export tracing a batch "
            "of 2, or declare the inputs' batch static 1 (onnx.tools.update_model_dims) to deploy at batch 1 only"
        ),
        blocking=True,
    )
