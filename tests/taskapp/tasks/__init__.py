"""Tasks the test suite sends to real workers.

This package is the ``tasks`` module that autodiscovery imports in the test
process and in every worker subprocess; each submodule belongs to one group
of tests.
"""

from . import api, chaos, docs, reference, reliability, worker  # noqa: F401
