"""Training data for the multi-view model: the per-identity folder layout (``layout``) and
dataset format (``format``), ``gen3dface dataset build`` (``build``), the synthetic head set
(``synthetic``) and the renderer both use (``render``), and ``prune`` (the seed paper's Janus
and ID-consistency filters). See docs/training.md and docs/dataset.md.
"""
