"""The ``runworker`` process: claim loop, task pools, execution, connection care.

The modules here import Django models, except ``child``, the entry point of
prefork child processes, which must be importable before ``django.setup()``;
so this package imports none of them itself.
"""
