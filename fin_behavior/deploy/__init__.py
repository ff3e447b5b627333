"""What drives serving from outside: rollout (gates, switch, rollback), the targets (local processes, Azure ML),
and deploying a registered version. The code that runs inside the serving environment is fin_behavior.serving."""
