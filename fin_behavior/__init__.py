"""fin_behavior."""
