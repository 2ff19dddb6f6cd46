"""The django-tasks-db peer: its settings, its no-op task and its driver
(:mod:`.driver`)."""
