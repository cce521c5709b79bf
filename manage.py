#!/usr/bin/env python
"""Django's command-line utility for Hearth."""

import os
import sys

# Commands that talk to Hearth over HTTP only: they must not start or need a database.
DATABASE_FREE_COMMANDS = {"outlet_agent"}


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
    if len(sys.argv) > 1 and sys.argv[1] in DATABASE_FREE_COMMANDS:
        os.environ["HEARTH_NO_DATABASE"] = "1"
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
