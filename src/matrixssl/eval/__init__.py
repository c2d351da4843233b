"""Evaluation of frozen representations: features, kNN, linear probe, effective rank."""
