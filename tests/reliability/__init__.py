"""The chaos suite: real workers under faults, checked against the invariants."""
