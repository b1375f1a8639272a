"""Evaluation: metrics, predictions over a split, a trained run loaded back, Grad-CAM."""
