"""Baselines: other libraries' algorithms on Mentor's driving env."""
