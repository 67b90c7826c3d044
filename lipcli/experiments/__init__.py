"""Experiment grids (``lipcli run``) and paper-style reports of their results (``lipcli report``)."""
