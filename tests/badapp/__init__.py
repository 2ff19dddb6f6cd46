"""An app whose tasks module sends a task while it is imported.

Only ``tests.settings_badapp`` installs it; the worker must refuse to start.
"""
