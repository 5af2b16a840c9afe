"""Training data for the multi-view model (issue 11): the per-identity dataset format
(``format``), ``gen3dface dataset build`` (``build``), the synthetic head set (``synthetic``)
and the renderer both use (``render``). See docs/training.md.
"""
