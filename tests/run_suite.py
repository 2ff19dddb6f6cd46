"""Run the test suite on one database, as tox does.

Usage: ``python tests/run_suite.py --database sqlite|postgres [pytest args]``.

Without ``DATABASE_URL`` the PostgreSQL run is skipped with a message, so a
fresh machine without a server still passes. A run that collects no test
fails: an empty run must never pass for a green one.
"""

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parent.parent

# pytest's exit code when it collected no test.
NO_TESTS_COLLECTED = 5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run the test suite on SQLite or PostgreSQL.",
        epilog="Other arguments are passed to pytest.",
        allow_abbrev=False,
    )
    parser.add_argument("--database", choices=["sqlite", "postgres"], required=True)
    options, pytest_args = parser.parse_known_args(argv)

    env = os.environ.copy()
    if options.database == "sqlite":
        # The settings choose PostgreSQL whenever a URL is set.
        env.pop("DATABASE_URL", None)
    elif not env.get("DATABASE_URL"):
        print("DATABASE_URL is not set: PostgreSQL run skipped.")
        return 0

    command = [sys.executable, "-m", "pytest", *pytest_args]
    returncode = subprocess.run(command, env=env, cwd=REPO_DIR, check=False).returncode

    if returncode == NO_TESTS_COLLECTED:
        print(f"pytest collected no test on {options.database}: failing the run.")
        return 1
    return returncode


if __name__ == "__main__":
    sys.exit(main())
