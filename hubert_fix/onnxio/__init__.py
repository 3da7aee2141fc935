"""Model files and ONNX Runtime: loading with weights left on disk (``skeleton``), checked
outputs and atomic writes (``files``), one weight at a time (``weights``), sessions in a
child process (``session``, ``isolation``)."""
