"""What a graph proves, read-only: graph helpers, weight-free shape inference, the proof of
equal dims (``dims``: facts, a provenance walk over ``steps`` and shape ``vectors``), the
conv stack's frame counts and a model's interface (which input is audio, which a mask)."""
