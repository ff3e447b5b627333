"""Monitoring what serves: the prediction log read over a rolling window, each version against the reference
profile its bundle carries, checks with their numbers, and alerts."""
