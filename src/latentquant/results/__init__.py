"""Experiments over many runs: ``sweep`` runs a grid, ``table`` summarises it.

Both work on the run-directory layout ``<root>/<dataset>/<model>/seed<k>/``
written by ``latentquant train``; they read only ``config.yaml`` and
``eval.json``, so a committed results tree without checkpoints still
tabulates.
"""
