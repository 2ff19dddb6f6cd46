"""The django-q2 peer: its settings, its no-op task and its driver
(:mod:`.driver`)."""
