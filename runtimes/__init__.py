"""Runtimes: where a run's experience comes from and where it goes (online, offline, collection)."""
