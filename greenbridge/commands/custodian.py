"""``greenbridge custodian``: operator commands on a configured legacy data custodian.

``import-authorizations CUSTODIAN_ID --client CLIENT_ID`` migrates the custodian's existing ESPI Authorizations
(issue 5, item 3c; docs/mapping.md §11.4) to server-created CDS Grants of one code-flow Client, so a utility moving
to CDS keeps its customers' consents:

* the custodian's client_credentials token (espi.custodian_client, endpoints from the ``[[custodians]]`` table)
  reads its Authorization feed; each ``Authorization`` resource goes through
  :func:`bridge.custodian_scopes.grant_from_authorization` with the custodian's scopes the Client was registered for
  (``cds_usage_{custodian}`` …). Client-credentials (administrative, bulk) Authorizations and ones no such scope
  covers are skipped (``AuthorizationNotMigratable``) and listed with the reason.
* each migrated Authorization becomes one Grant (:func:`bridge.custodian_scopes.persist_server_created_grant`), linked
  to its ``authorizationURI`` by an ``upstream_authorizations`` row without tokens (bridge.upstream.link_imported), and
  one changelog Message (``Grant created``) in the Client's registration. An Authorization already linked to a
  Grant (imported before, or consented through the gateway) is left alone: running the command again creates
  nothing.

The Grants are visible in the Grants API of the Client's registration and reachable through its Grant Admin flow
(``cds_grant_admin_1``). The store and configuration are the gateway's (``--config`` or ``$GREENBRIDGE_CONFIG``
and the ``GREENBRIDGE_*`` environment); the schema is migrated first.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from greenbridge import progress
from greenbridge.progress import Progress

_PROG = "greenbridge custodian"


class CustodianCommandError(Exception):
    """An unknown custodian or Client, or a custodian that cannot be read (exit status 1)."""


@dataclass
class ImportResult:
    """What one import did: created Grants (authorizationURI, grant id), Authorizations already linked to a Grant,
    and skipped ones with the reason."""

    created: list[tuple[str, str]] = field(default_factory=list)
    existing: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "custodian",
        help="operator commands on configured legacy data custodians (import existing authorizations)",
        description="Operator commands on the legacy Green Button data custodians of the [[custodians]] tables.",
    )
    parser.add_argument("--config", metavar="FILE", help="TOML configuration file (default $GREENBRIDGE_CONFIG)")
    actions = parser.add_subparsers(dest="custodian_action", metavar="ACTION")
    actions.required = True
    text = ("migrate the custodian's existing ESPI Authorizations to server-created CDS Grants of a client "
            "(idempotent: one Grant per authorizationURI)")
    sub = actions.add_parser("import-authorizations", help=text, description=text[0].upper() + text[1:] + ".")
    sub.add_argument("custodian_id", metavar="CUSTODIAN_ID")
    sub.add_argument("--client", dest="client_id", metavar="CLIENT_ID", required=True,
                     help="the code-flow CDS Client the Grants belong to (registered with the custodian's scopes)")
    sub.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help="TOML configuration file")
    progress.add_arguments(sub)
    sub.set_defaults(run=run_import)


# ---------------------------------------------------------------------------------------------- the work
def _authorizations(custodian: Any, issuer: str) -> list[tuple[str | None, Any]]:
    """(entry self link, Authorization) of every Authorization resource in the custodian's feed."""
    from bridge import upstream
    from espi.custodian_client import CustodianError, Deferred
    from espi.feed import read_feed

    with tempfile.TemporaryDirectory(prefix="gb-import-") as directory:
        client = upstream.client(custodian, issuer, download_dir=directory)
        try:
            token = client.client_credentials()
            fetched = client.authorizations(token.access_token)
        except CustodianError as error:
            raise CustodianCommandError(f"custodian {custodian.id}: {error}") from None
        if isinstance(fetched, Deferred):
            raise CustodianCommandError(f"custodian {custodian.id} deferred the Authorization feed (202); "
                                        "try again later")
        feed = read_feed(fetched.path)
        return [(entry.self_href, resource.value) for entry in feed.entries for resource in entry.resources
                if resource.name == "Authorization"]


def import_authorizations(config: Any, custodian_id: str, client_id: str, *,
                          now: datetime | None = None, bar: Progress | None = None) -> ImportResult:
    """Migrate custodian ``custodian_id``'s Authorizations to Grants of Client ``client_id`` in the store of
    ``config`` (a GatewayConfig). ``CustodianCommandError`` for an unknown custodian or Client, a Client registered
    for none of the custodian's scopes, or a custodian that cannot be read. ``bar`` counts the Authorizations done
    (total and ETA once the feed is read)."""
    from bridge import upstream
    from bridge.custodian_scopes import (
        AuthorizationNotMigratable,
        custodian_scope_ids,
        grant_from_authorization,
        persist_server_created_grant,
    )
    from cds.messages import changelog
    from cds.store.models import Client
    from espi.custodian_client import CustodianTokens
    from gateway.context import build_gateway

    custodian = next((c for c in config.custodians if c.id == custodian_id), None)
    if custodian is None:
        raise CustodianCommandError(f"no custodian {custodian_id!r} in the configuration")
    gateway = build_gateway(config)
    try:
        offered = custodian_scope_ids(gateway.descriptions, custodian.id)
        if not offered:
            raise CustodianCommandError(f"custodian {custodian_id!r} offers no CDS scope: configure its scopes "
                                        "(the scope strings of its ApplicationInformation)")
        with gateway.sessions() as session:
            client = session.get(Client, client_id)
            if client is None:
                raise CustodianCommandError(f"no client {client_id!r}")
            if not client.response_types:
                raise CustodianCommandError(f"client {client_id} is not a code-flow client; server-created grants "
                                            "belong to the client that holds customer consents")
            allowed = [scope_id for scope_id in offered if scope_id in client.scope.split()]
            if not allowed:
                raise CustodianCommandError(f"client {client_id} was registered for none of custodian "
                                            f"{custodian_id}'s scopes ({', '.join(offered)})")
            descriptions = {scope_id: gateway.descriptions[scope_id] for scope_id in allowed}
            result = ImportResult()
            found = _authorizations(custodian, config.issuer)
            bar = bar or Progress(False, total=None)
            bar.set_total(len(found))
            now = now or datetime.now(UTC)
            for self_href, authorization in found:
                bar.advance(1)
                uri = authorization.authorization_uri or self_href
                if not uri:
                    result.skipped.append(("(no URI)", "the Authorization names no authorizationURI"))
                    continue
                foreign = upstream.foreign_uris(custodian, authorizationURI=uri,
                                                resourceURI=authorization.resource_uri,
                                                customerResourceURI=authorization.customer_resource_uri)
                if foreign:  # never stored: revocation and bulk placement act on these URIs
                    result.skipped.append((uri[:300], "not the custodian's resources: " + "; ".join(foreign)))
                    continue
                existing = upstream.imported_grant_id(session, custodian.id, uri)
                if existing is not None:
                    result.existing.append((uri, existing))
                    continue
                try:
                    data = grant_from_authorization(authorization, descriptions=descriptions,
                                                    custodian_id=custodian.id, now=now, timezone=config.timezone)
                    customer = upstream.customer_key(custodian.id, CustodianTokens(
                        access_token="", resource_uri=authorization.resource_uri, authorization_uri=uri,
                        customer_resource_uri=authorization.customer_resource_uri))
                except (AuthorizationNotMigratable, ValueError) as error:
                    result.skipped.append((uri, str(error)))
                    continue
                grant = persist_server_created_grant(session, client, data, gateway.box, customer_id=customer,
                                                     now=now)
                session.flush()
                upstream.link_imported(session, grant_id=grant.grant_id, custodian_id=custodian.id,
                                       customer_id=customer, scope=data["upstream"]["scope"] or "",
                                       resource_uri=authorization.resource_uri, authorization_uri=uri,
                                       customer_resource_uri=authorization.customer_resource_uri, now=now)
                changelog(
                    session, client.registration_id, related_uri=gateway.urls.grant(grant.grant_id),
                    related_type="grant", name="Grant created",
                    description=f"Grant {grant.grant_id} of Client {client.client_id} was created by the server "
                                f"from {custodian.name}'s existing authorization {uri} ({data['scope']}).",
                    changes=[{"field": "status", "previous_value": None, "new_value": data["status"]},
                             {"field": "scope", "previous_value": None, "new_value": data["scope"]}],
                    box=gateway.box, now=now,
                )
                result.created.append((uri, grant.grant_id))
                bar.count("created", 1)
            session.commit()
            return result
    finally:
        gateway.engine.dispose()


# ---------------------------------------------------------------------------------------------- the command
def run_import(args: argparse.Namespace) -> int:
    from bridge.config import ConfigError, load_config

    try:
        with Progress(progress.wanted(args), total=None, unit="authorization", desc="import") as bar:
            result = import_authorizations(load_config(getattr(args, "config", None)), args.custodian_id,
                                           args.client_id, bar=bar)
    except (ConfigError, CustodianCommandError) as error:
        print(f"{_PROG} import-authorizations: {error}", file=sys.stderr)
        return 1
    for uri, grant_id in result.created:
        print(f"created\t{grant_id}\t{uri}")
    for uri, grant_id in result.existing:
        print(f"exists\t{grant_id}\t{uri}")
    for uri, reason in result.skipped:
        print(f"skipped\t-\t{uri}\t{reason}")
    print(f"{len(result.created)} created, {len(result.existing)} already imported, {len(result.skipped)} skipped",
          file=sys.stderr)
    return 0
