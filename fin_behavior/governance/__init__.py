"""Governance: the model risk report per registered version, the model card, and the inventory of models.
(The fairness evidence itself is computed where the model is evaluated: fin_behavior/ml/fairness.py.)"""
