"""Governance: fairness evidence, the model risk report, the model card and the inventory of models."""
