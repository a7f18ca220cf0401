"""Evaluation: STQ and VPQ, the scorer, and the predict / eval commands (how a model is scored)."""
