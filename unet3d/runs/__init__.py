"""Whole runs: folds, training then prediction and evaluation, cluster job arrays, cross-validation summaries.

This layer sits above train, predict and evaluate and is the only one that uses all three.
"""
