"""python manage.py order send|handover|cancel NUMBER: a manager's ways out for one order."""

from __future__ import annotations

import argparse
import getpass
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from queueing.errors import QueueError
from queueing.services import order_cancel, order_hand_over, order_send
from queueing.services.outlets import outlet_get

MAX_NUMBER = 2**63 - 1


def number_type(raw: str) -> int:
    if not raw.isdigit() or not 0 < int(raw) <= MAX_NUMBER:
        raise argparse.ArgumentTypeError(f"must be an order number, got {raw!r}")
    return int(raw)


class Command(BaseCommand):
    help = (
        "Send an open or set-aside order to an outlet, mark it handed over, or cancel it "
        "with a reason the customer sees."
    )
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        send = actions.add_parser("send", help="queue it at an active outlet, to be made there")
        send.add_argument("number", type=number_type)
        send.add_argument("--to", required=True, metavar="OUTLET", help="the outlet's slug")
        handover = actions.add_parser("handover", help="it reached its customer: completed")
        handover.add_argument("number", type=number_type)
        cancel = actions.add_parser("cancel", help="cancel it; the customer sees the reason")
        cancel.add_argument("number", type=number_type)
        cancel.add_argument("--reason", required=True, help="what the customer is told")
        for sub in (send, handover, cancel):
            sub.add_argument(
                "--by", default="", help="who decides, for the record (default: your login)"
            )

    def handle(self, *args: Any, action: str, number: int, by: str, **options: Any) -> None:
        by = by or f"{getpass.getuser()} (manage.py)"
        try:
            if action == "send":
                outlet = outlet_get(slug=options["to"])
                order_send(order_id=number, outlet=outlet, by=by)
                self.stdout.write(f"order {number} sent to {outlet.slug}: queued there")
            elif action == "handover":
                order_hand_over(order_id=number, by=by)
                self.stdout.write(f"order {number} marked handed over: completed")
            else:
                ticket = order_cancel(order_id=number, reason=options["reason"], by=by)
                self.stdout.write(f"order {number} cancelled: {ticket.cancel_reason}")
        except QueueError as exc:
            raise CommandError(exc.message) from None
