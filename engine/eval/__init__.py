"""Evaluation of reconstructions against references (mesh metrics)."""
