"""Evaluation with the seed paper's measures (§4): identity, CLIP, FID, pixels against ground truth.

``embedders`` (swappable face/image backends), ``metrics`` (the reductions, FID's Fréchet
distance), ``runs`` (reading run directories), ``command`` (``gen3dface eval``), ``plot``.
Nothing here is imported by a ``generate`` run.
"""
