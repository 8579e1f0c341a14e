"""Rollout and evaluation workers: one environment, one policy, one feedback client each."""
