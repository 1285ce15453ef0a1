"""``greenbridge client``: the operator's switch for Client objects (``list``, ``enable``, ``disable``).

Direct-access Clients (CDS-WG3-01 §6.2, the ``cds_query_*`` scopes) read the data of any customer they can name,
so registration creates them ``disabled`` with ``cds_status_options`` ``["disabled"]`` (cds/registration.py): their
scopes carry the ``internal_review`` registration requirement ``cds_internal_review`` (WG1-02 §3.5–3.6). After the
review the operator runs ``greenbridge client enable CLIENT_ID``.

* ``enable``: a Client without response types becomes ``production`` with options ``["production", "disabled"]``
  (the Client Admin client keeps its single option ``["production"]``). A code-flow Client goes back to
  ``sandbox`` with ``["sandbox", "disabled"]``: its production Client is a new Client object (WG1-02 §4.3), which
  this command does not create.
* ``disable``: ``disabled`` with options ``["disabled"]``, so the Client cannot undo it through the Clients API.
  As for a disable through the Clients API (cds/clients.py), its tokens are revoked and its unexpired secrets
  expire now (WG1-02 §7.2); after a later ``enable`` the Client creates a new secret through the Credentials API.
* ``list``: every Client (``--status`` narrows, ``--json`` prints the Client objects).

Every change writes one changelog Message to the Client's registration (a ``notification`` with ``creator`` null,
``related_uri`` the Client's URI, ``related_type`` ``client``, the changed ``cds_status``/``cds_status_options`` in
``updates_requested``), written by the same helper as the Clients API. A change that changes nothing writes nothing.

The store is the gateway's: ``--config`` (or ``$GREENBRIDGE_CONFIG``) and the ``GREENBRIDGE_*`` environment, as for
``greenbridge serve``; the schema is migrated first.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

_PROG = "greenbridge client"
ACTIONS = ("enable", "disable")


class ClientCommandError(Exception):
    """An unknown Client or a change this command does not make (exit status 1)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "client",
        help="list, enable and disable Client objects (operator review of direct-access clients)",
        description="Operator commands on the gateway's Client objects. Direct-access clients (cds_query_* "
                    "scopes) start disabled until the operator's review; 'enable' puts them in production.",
    )
    parser.add_argument("--config", metavar="FILE", help="TOML configuration file (default $GREENBRIDGE_CONFIG)")
    actions = parser.add_subparsers(dest="client_action", metavar="ACTION")
    actions.required = True
    for action, text in (("enable", "set a client to production (sandbox for code-flow clients)"),
                         ("disable", "disable a client: no tokens, existing tokens revoked, secrets expired")):
        sub = actions.add_parser(action, help=text, description=text[0].upper() + text[1:] + ".")
        sub.add_argument("client_id", metavar="CLIENT_ID")
        sub.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help="TOML configuration file")
        if action == "enable":
            sub.add_argument("--customer", metavar="CUSTOMER_ID", default=None,
                             help="bind a direct-access client to the customer whose data it may read (without "
                                  "it, its tokens reach no customer data)")
        sub.set_defaults(run=run_action, action=action)
    listing = actions.add_parser("list", help="list every client", description="List every client.")
    listing.add_argument("--status", choices=("production", "sandbox", "disabled"), help="only clients in it")
    listing.add_argument("--json", action="store_true", help="print the Client objects as JSON")
    listing.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help="TOML configuration file")
    listing.set_defaults(run=run_list)


# ---------------------------------------------------------------------------------------------- the work
class _Store:
    """The gateway's store, migrated, for one command."""

    def __init__(self, config: Any) -> None:
        from cds.secrets import SecretBox
        from cds.store.engine import make_engine, make_sessionmaker
        from cds.store.migrate import upgrade
        from cds.urls import Urls

        self.engine = make_engine(config.database_url)
        upgrade(self.engine)
        self.sessions = make_sessionmaker(self.engine)
        self.box = SecretBox(config.fernet_key, config.derived_key("token-hash"))
        self.urls = Urls(config.issuer)

    def __enter__(self) -> _Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.engine.dispose()


def _active_status(client: Any) -> tuple[str, list[str]]:
    if client.response_types:
        return "sandbox", ["sandbox", "disabled"]
    if client.client_id == client.registration_id:  # the Client Admin client (cds/registration.py)
        return "production", ["production"]
    return "production", ["production", "disabled"]


def set_client_status(config: Any, client_id: str, action: str, *, customer_id: str | None = None,
                      now: datetime | None = None) -> dict[str, Any]:
    """``enable`` or ``disable`` the Client ``client_id`` in the store of ``config`` (a GatewayConfig); returns the
    Client object afterwards. ``customer_id`` (enable only) binds a direct-access client to the one customer whose
    data its grants may read. ``ClientCommandError`` for an unknown Client or action."""
    from cds.clients import _disable
    from cds.messages import changelog
    from cds.registration import client_json
    from cds.store.models import Client

    if action not in ACTIONS:
        raise ClientCommandError(f"unknown action {action!r}; expected one of {list(ACTIONS)}")
    now = now or datetime.now(UTC)
    with _Store(config) as store, store.sessions() as session:
        client = session.get(Client, client_id)
        if client is None:
            raise ClientCommandError(f"no client {client_id!r}")
        status, options = _active_status(client) if action == "enable" else ("disabled", ["disabled"])
        changes = [{"field": name, "previous_value": old, "new_value": new} for name, old, new in (
            ("cds_status", client.status, status), ("cds_status_options", list(client.status_options), options))
            if old != new]
        if customer_id is not None and customer_id != client.customer_id:
            if client.response_types or not any(s.startswith("cds_query_") for s in client.scope.split()):
                raise ClientCommandError("only direct-access (cds_query_*) clients are bound to a customer")
            if client.customer_id is not None:
                # Rebinding would hand the existing grants another customer's data: revoke them first.
                raise ClientCommandError(f"client {client_id} is already bound to another customer; "
                                         "disable it and register a new client")
            client.customer_id = customer_id
            changes.append({"field": "customer", "previous_value": None, "new_value": customer_id})
        if not changes:
            return client_json(client, store.urls)
        was_disabled = client.status == "disabled"
        client.status = status
        client.status_options = options
        client.modified = now
        verb = "enabled" if action == "enable" else "disabled"
        changelog(
            session, client.registration_id, related_uri=store.urls.client(client.client_id), related_type="client",
            name=f"Client {verb}",
            description=f"The operator {verb} Client {client.client_id} ({client.scope}): cds_status is now "
                        f"{status}.", changes=changes, box=store.box, now=now,
        )
        if status == "disabled" and not was_disabled:
            _disable(session, client, urls=store.urls, box=store.box, now=now)
        session.commit()
        return client_json(client, store.urls)


def list_clients(config: Any, *, status: str | None = None) -> list[dict[str, Any]]:
    """Every Client object of the store (oldest first), or those with ``cds_status`` = ``status``."""
    from sqlalchemy import select

    from cds.registration import client_json
    from cds.store.models import Client

    with _Store(config) as store, store.sessions() as session:
        statement = select(Client).order_by(Client.created, Client.client_id)
        if status is not None:
            statement = statement.where(Client.status == status)
        return [client_json(client, store.urls) for client in session.scalars(statement)]


# ---------------------------------------------------------------------------------------------- the commands
def _config(args: argparse.Namespace) -> Any:
    from bridge.config import load_config

    return load_config(getattr(args, "config", None))


def run_action(args: argparse.Namespace) -> int:
    from bridge.config import ConfigError

    try:
        client = set_client_status(_config(args), args.client_id, args.action,
                                   customer_id=getattr(args, "customer", None))
    except (ConfigError, ClientCommandError) as error:
        print(f"{_PROG} {args.action}: {error}", file=sys.stderr)
        return 1
    print(f"{client['client_id']}: {client['cds_status']} (options {', '.join(client['cds_status_options'])}; "
          f"scope {client['scope']})")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from bridge.config import ConfigError

    try:
        clients = list_clients(_config(args), status=args.status)
    except ConfigError as error:
        print(f"{_PROG} list: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(clients, indent=2))
        return 0
    for client in clients:
        print("\t".join((client["client_id"], client["cds_status"], "/".join(client["cds_status_options"]),
                         client["scope"], client["client_name"])))
    return 0
