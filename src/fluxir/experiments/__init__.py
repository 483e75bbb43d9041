"""Experiment runners on top of the stages: the paper's ablations (Tables 2-7)."""
