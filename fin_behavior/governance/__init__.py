"""Governance: the model risk report per registered version, the model card, and the inventory of models
(the fairness evidence itself is computed where the model is evaluated: fin_behavior/ml/fairness.py); approvals
(four eyes) and the tamper-evident history of every decision about a model (docs/approvals.md). No Dagster."""
