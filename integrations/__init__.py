"""Mentor for other libraries: gymnasium reward wrappers, a Serve scorer, Minari export."""
