"""Dagster wiring: thin assets, checks, jobs and resources over the domain modules."""

import warnings

import dagster as dg

# Observable sources are how Dagster versions external files; we use them deliberately.
warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*(observable_source_asset|include_sources)")
