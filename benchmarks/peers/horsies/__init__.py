"""The horsies peer: its app with the no-op task (:mod:`.app`) and its driver
(:mod:`.driver`)."""
