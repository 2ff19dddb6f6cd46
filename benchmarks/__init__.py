"""Benchmarks of django-tasks-q; each module is one command (see README)."""
