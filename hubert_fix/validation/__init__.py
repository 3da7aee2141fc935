"""``hubert-fix validate``: the input matrix a model admits, stored reference cases, the run
on ONNX Runtime with its checks, and the reports (``report``; JUnit in ``junit``)."""
