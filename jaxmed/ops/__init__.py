"""Numerical kernels shared by the models."""
