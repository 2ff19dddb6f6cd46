"""``manage.py demo``: run the demo in ``demo.runner`` and report its outcome."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from demo.runner import DemoError, DemoRunner


class Command(BaseCommand):
    help = (
        "Migrate the SQLite database, start a worker, send a mix of demo tasks, "
        "show their progress and results, then stop the worker. Exits non-zero "
        "when a task did not end as expected."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            all_expected = DemoRunner(self._write).run()
        except DemoError as exc:
            raise CommandError(str(exc)) from exc
        except KeyboardInterrupt:
            # The runner has stopped the worker on its way out.
            raise CommandError("Interrupted.") from None

        if not all_expected:
            raise CommandError("Some demo tasks did not end as expected.")

    def _write(self, line: str) -> None:
        # Flush every line, so that progress shows up as it happens even when
        # the output goes to a pipe.
        self.stdout.write(line)
        self.stdout.flush()
