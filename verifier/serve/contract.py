"""What the gateway and the RL adapters agree on, importable without the server's dependencies."""

# The numeric figures every judged item carries (``stats``), under the same keys whatever happened to it:
# RL frameworks stack each key across samples, so a key may never be missing or hold a non-number.
STAT_KEYS = (
    "support_rate",
    "vital_coverage",
    "n_rubrics",
    "judged",
    "unjudgeable",
    "degenerate",
    "latency_s",
)
