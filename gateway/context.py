"""The gateway's context: ``build_gateway(config)`` builds, once per application, everything a route needs (the
store, the OAuth server, the scope descriptions, the job publisher) and wires the bridge's hooks into cds."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from bridge import consent_hop, lifecycle
from bridge.config import GatewayConfig
from bridge.custodian_scopes import custodian_scope_ids, merge_offers, offered_scopes
from cds.authorization_details import ValidatedDetails
from cds.grants import GrantClosedHook
from cds.scopes import build_scope_descriptions
from cds.secrets import SecretBox
from cds.store.engine import make_engine, make_sessionmaker
from cds.store.migrate import upgrade
from cds.urls import Urls
from gateway.job_publisher import JobPublisher
from gateway.oauth.server import GatewayServer, RequestCheck


@dataclass
class Gateway:
    """Everything a route needs, built once per application."""

    config: GatewayConfig
    urls: Urls
    engine: Engine
    sessions: sessionmaker[Session]
    box: SecretBox
    descriptions: dict[str, Any]
    oauth: GatewayServer
    #: Custodian-specific scope id (``cds_usage_sandbox``) → the custodian it implies (issue 5, item 3a).
    scope_custodians: dict[str, str] = field(default_factory=dict)
    #: Sends the jobs each committed transaction created to the workers (gateway.job_publisher).
    publisher: JobPublisher | None = None
    #: Runs whenever a Grant closes or is revoked, in that transaction: the custodian's Authorization ends too.
    grant_closed: GrantClosedHook = lifecycle.end_upstream


def build_gateway(config: GatewayConfig, *, migrate: bool = True) -> Gateway:
    urls = Urls(config.issuer)
    engine = make_engine(config.database_url)
    if migrate:
        upgrade(engine)
    box = SecretBox(config.fernet_key, config.derived_key("token-hash"))
    generic = build_scope_descriptions(
        documentation_base=urls.documentation, timezone=config.timezone, segment_history=config.segment_history,
        coverages=[entry["id"] for entry in config.coverage],
    )
    descriptions, scope_custodians = with_custodian_scopes(config, generic, urls)
    oauth = GatewayServer(config, descriptions, box, urls,
                          request_check=servable_check(config, descriptions, scope_custodians))
    sessions = make_sessionmaker(engine)
    publisher = JobPublisher(config.redis_url)
    publisher.attach(sessions)
    return Gateway(config, urls, engine, sessions, box, descriptions, oauth, scope_custodians, publisher)


def servable_check(config: GatewayConfig, descriptions: dict[str, Any], scope_custodians: dict[str, str]
                   ) -> RequestCheck | None:
    """With custodians configured, PAR refuses a request of which no utility can deliver anything (the consent hop
    would fail only after the customer approved; bridge.consent_hop). Without, consent is local: no check."""
    if not config.custodians:
        return None

    def check(scope: str, details: ValidatedDetails) -> None:
        found = consent_hop.options(config.custodians, scope, details.effective, descriptions=descriptions,
                                    scope_custodians=scope_custodians, now=details.now or datetime.now(UTC),
                                    timezone=config.timezone)
        consent_hop.check_servable(found)

    return check


def with_custodian_scopes(config: GatewayConfig, generic: dict[str, Any], urls: Urls
                          ) -> tuple[dict[str, Any], dict[str, str]]:
    """The gateway's generic descriptions merged with every custodian's offer (``cds_usage_{custodian}`` …, from
    its configured scope strings; bridge.custodian_scopes, docs/mapping.md §11), and which custodian each of those
    scope ids implies."""
    coverage_ids = {entry["id"] for entry in config.coverage}
    offers: list[dict[str, Any]] = []
    scope_custodians: dict[str, str] = {}
    for custodian in config.custodians:
        if not custodian.scopes:
            continue
        offer = offered_scopes(custodian.id, custodian.scopes, documentation_base=urls.documentation,
                               timezone=config.timezone, custodian_name=custodian.name,
                               coverages=[custodian.id] if custodian.id in coverage_ids else [])
        offers.append(offer)
        scope_custodians.update(dict.fromkeys(custodian_scope_ids(offer, custodian.id), custodian.id))
    return merge_offers([generic, *offers]), scope_custodians
