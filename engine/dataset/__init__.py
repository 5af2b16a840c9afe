"""Training dataset tools: the per-identity folder layout (``layout``) and ``prune`` (seed paper's
Janus and ID-consistency filters). See docs/dataset.md."""
