"""Robustness evaluation: attacks run over a test set, accounted for by lipcli, turned into error curves."""
