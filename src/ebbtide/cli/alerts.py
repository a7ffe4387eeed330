"""`ebbtide alerts …` and `ebbtide notifications`: who hears about failed syncs, and how."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ebbtide.cli import render
from ebbtide.cli.context import JsonFlag, out, service
from ebbtide.enums import AlertStatus, Channel
from ebbtide.errors import UsageError

if TYPE_CHECKING:
    from ebbtide.config.alerts import SubscriptionSpec
    from ebbtide.services.alerts import AlertService

alerts_app = typer.Typer(
    help="Alerts on failed and partially successful syncs.", no_args_is_help=True
)

EmailOption = Annotated[str, typer.Option("--email", help="The person, by email address.")]


def _alerts() -> AlertService:
    return service().alerts


@alerts_app.command("subscribe")
def subscribe(
    email: EmailOption,
    status: Annotated[
        list[AlertStatus] | None,
        typer.Option("--status", help="failed, partial_success, recovered (repeat the option)."),
    ] = None,
    channel: Annotated[
        list[Channel] | None, typer.Option("--channel", help="email and/or in_app.")
    ] = None,
    mapping: Annotated[
        list[str] | None, typer.Option("--mapping", help="Only these mappings (default: all).")
    ] = None,
) -> None:
    """Sign a person up for alerts, kept in the state store."""
    number, spec = _alerts().subscribe(email, status, channel, mapping)
    out.print(
        f"subscription {number}: {email} hears about {_describe(spec)}",
        markup=False,
        highlight=False,
    )


@alerts_app.command("unsubscribe")
def unsubscribe(
    subscription: Annotated[int | None, typer.Argument(help="A subscription's number.")] = None,
    email: Annotated[str | None, typer.Option("--email", help="Every subscription of")] = None,
) -> None:
    """Remove a subscription kept in the state store (those in ebbtide.yml live in Git)."""
    if (subscription is None) == (email is None):
        raise typer.BadParameter("name a subscription number or --email (not both)")
    removed = _alerts().book.unsubscribe(subscription_id=subscription, email=email)
    if not removed:
        raise UsageError("no such subscription in the state store (see `ebbtide alerts list`)")
    out.print(f"removed {removed} subscription(s)")


@alerts_app.command("list")
def list_subscriptions(json_output: JsonFlag = False) -> None:
    """Every subscription: those in ebbtide.yml, then those in the state store."""
    rows = _alerts().listed()
    if json_output:
        render.print_views(out, rows)
        return
    table = Table(title="Alert subscriptions", title_justify="left")
    for column in ("id", "to", "statuses", "mappings", "channels"):
        table.add_column(column)
    for row in rows:
        render.add_row(
            table,
            row.id,
            row.to,
            ", ".join(row.statuses),
            ", ".join(row.mappings) if row.mappings else "all",
            ", ".join(row.channels),
        )
    out.print(table)


@alerts_app.command("emails")
def emails(json_output: JsonFlag = False) -> None:
    """The email addresses currently signed up to receive notifications."""
    addresses = _alerts().emails()
    if json_output:
        render.print_json(out, addresses)
    else:
        for address in addresses:
            out.print(address, markup=False, highlight=False)


@alerts_app.command("test")
def test(channel: Channel, json_output: JsonFlag = False) -> None:
    """Send a sample alert through every subscription of CHANNEL."""
    deliveries = _alerts().test(channel)
    if json_output:
        render.print_json(out, [d.to_json() for d in deliveries])
    else:
        for d in deliveries:
            result = (
                "[green]sent[/]" if d.delivered else f"[red]failed[/] ({escape(d.error or '')})"
            )
            out.print(f"{d.channel} → {escape(d.target)}: {result}")
    if not all(d.delivered for d in deliveries):
        raise typer.Exit(1)


@alerts_app.command("log")
def log(
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 50,
    json_output: JsonFlag = False,
) -> None:
    """Alerts sent and alerts that could not be delivered, newest first."""
    deliveries = _alerts().book.deliveries(limit)
    if json_output:
        render.print_json(out, [d.to_json() for d in deliveries])
        return
    table = Table(title="Alerts", title_justify="left")
    for column in ("when (UTC)", "run", "mapping", "event", "channel", "to", "result"):
        table.add_column(column)
    for d in deliveries:
        render.add_row(
            table,
            f"{d.created_at:%m-%d %H:%M:%S}",
            str(d.run_id or "—"),
            d.mapping,
            d.event,
            d.channel,
            d.target,
            "delivered"
            if d.delivered
            else Text.assemble((f"failed after {d.attempts}", "red"), f": {d.error or ''}"),
        )
    out.print(table)


def notifications(
    email: EmailOption,
    unread: Annotated[bool, typer.Option("--unread", help="Only unread ones.")] = False,
    mark_read: Annotated[
        bool, typer.Option("--mark-read", help="Mark them read after showing them.")
    ] = False,
    json_output: JsonFlag = False,
) -> None:
    """A person's in-app notifications, newest first."""
    from ebbtide.services.views import NotificationView
    from ebbtide.state.store import utcnow

    book = _alerts().book
    found = book.notifications(email, unread_only=unread)
    if json_output:
        render.print_views(out, [NotificationView.of(n) for n in found])
    else:
        for n in found:
            mark = "" if n.read_at else "[bold]● [/]"
            out.print(f"{mark}{n.created_at:%Y-%m-%d %H:%M} {escape(n.title)}", highlight=False)
        if not found:
            out.print("no notifications" if not unread else "no unread notifications")
    if mark_read:
        book.mark_read(email, utcnow())


def _describe(spec: SubscriptionSpec) -> str:
    mappings = ", ".join(spec.mappings) if spec.mappings else "every mapping"
    return f"{', '.join(spec.statuses)} of {mappings} by {', '.join(spec.delivered_by)}"
