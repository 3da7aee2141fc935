"""``hubert-fix optimize``: faster deployment copies of a repaired model (fp32 layouts, int8,
fp16), each written only once it validates against the model it came from."""
