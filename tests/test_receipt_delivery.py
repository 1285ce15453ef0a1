"""Customers keep their receipt (issue 14 item 6): the confirmation page between approval and the redirect, the
receipt by e-mail through a real SMTP server on 127.0.0.1 (aiosmtpd), dates in the customer's zone to the minute,
and the address of an upstream customer read from their stored account data."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from email import message_from_bytes, policy
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest
from aiosmtpd.controller import Controller
from gateway_helpers import (
    continue_to_client,
    gateway_client,
    make_config,
    pkce_pair,
    receipt_url_of,
    register,
)
from servers import free_port

from bridge.config import ConfigError, load_config
from cds import consent
from cds.store.engine import make_engine, make_sessionmaker
from cds.store.migrate import upgrade
from cds.store.models import DataObject, Grant, PushedRequest


class Inbox:
    """aiosmtpd handler keeping every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd's hook name
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


@pytest.fixture
def smtp_server():
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller.port, inbox
    finally:
        controller.stop()


def _smtp_toml(port: int) -> str:
    return f"""
[smtp]
host = "127.0.0.1"
port = {port}
from = "receipts@greenbridge.example"
tls = "none"

[[test_customers]]
customer_id = "customer-1"
name = "Alex Example"
password = "sandbox"
email = "alex@home.example"

[[test_customers]]
customer_id = "customer-2"
name = "Sam Example"
password = "sandbox"
"""


def _approve(client, registration, customer: str = "customer-1", state: str = "s1"):
    """PAR, the consent page, approval; returns (the confirmation page, the PAR form, the PKCE verifier)."""
    app = registration.client_for("cds_usage_1")
    verifier, challenge = pkce_pair()
    form = {"response_type": "code", "client_id": app["client_id"], "redirect_uri": app["redirect_uris"][0],
            "scope": "cds_usage_1", "state": state, "code_challenge": challenge, "code_challenge_method": "S256"}
    pushed = client.post("/oauth/par", data=form, auth=registration.auth_for("cds_usage_1")).json()
    page = client.get("/oauth/authorize", params={"client_id": app["client_id"], "request_uri": pushed["request_uri"]})
    handle = re.search(r'name="consent" value="([^"]+)"', page.text).group(1)
    approved = client.post("/oauth/authorize", data={"consent": handle, "decision": "approve",
                                                     "customer_id": customer, "password": "sandbox"})
    return approved, form, verifier


def test_the_receipt_is_mailed_to_a_known_address(tmp_path, smtp_server):
    port, inbox = smtp_server
    with gateway_client(make_config(tmp_path, extra_toml=_smtp_toml(port))) as client:
        registration = register(client)
        approved, form, verifier = _approve(client, registration)
        assert approved.status_code == 200
        assert 'id="mailed"' in approved.text and "a•••@home.example" in approved.text
        receipt_url = receipt_url_of(approved)
        confirmation = re.search(r'id="confirmation">([^<]+)<', approved.text).group(1)

        (sender, recipients, raw), = inbox.messages
        assert sender == "receipts@greenbridge.example" and recipients == ["alex@home.example"]
        message = message_from_bytes(raw, policy=policy.default)
        assert message["To"] == "alex@home.example"
        assert message["Subject"] == f"Your authorization receipt {confirmation}"
        body = message.get_body(("plain",)).get_content()
        assert receipt_url in body and confirmation in body and "Test App" in body
        assert client.get(urlsplit(receipt_url).path).status_code == 200  # the mailed link is the receipt

        # continuing still brings the client its code, once
        answer = continue_to_client(client, approved)
        query = parse_qs(urlsplit(answer.headers["location"]).query)
        assert query["state"] == ["s1"]
        tokens = client.post("/oauth/token", auth=registration.auth_for("cds_usage_1"), data={
            "grant_type": "authorization_code", "code": query["code"][0], "redirect_uri": form["redirect_uri"],
            "code_verifier": verifier})
        assert tokens.status_code == 200, tokens.text
        handle = re.search(r'name="continue" value="([^"]+)"', approved.text).group(1)
        replay = client.post("/oauth/authorize/continue", data={"continue": handle})
        assert replay.status_code == 400 and "location" not in replay.headers

        # a customer without an address: no mail, and the page does not promise one
        approved, _form, _verifier = _approve(client, registration, customer="customer-2")
        assert approved.status_code == 200 and 'id="mailed"' not in approved.text and len(inbox.messages) == 1


def test_no_smtp_no_mail_and_a_dead_mail_server_never_fails_the_approval(tmp_path, caplog):
    closed = free_port()  # nothing listens there
    toml = _smtp_toml(closed)
    with gateway_client(make_config(tmp_path, extra_toml=toml)) as client:
        registration = register(client)
        with caplog.at_level(logging.WARNING, logger="greenbridge.oauth"):
            approved, _form, _verifier = _approve(client, registration)
        assert approved.status_code == 200
        receipt_url = receipt_url_of(approved)
        assert "could not be sent by e-mail" in caplog.text
        assert receipt_url.rsplit("/", 1)[1] not in caplog.text  # the link is the customer's credential
        continue_to_client(client, approved)
    customers_only = "[[test_customers]]" + toml.split("[[test_customers]]", 1)[1]  # addresses, no [smtp]
    (tmp_path / "nosmtp").mkdir()
    with gateway_client(make_config(tmp_path / "nosmtp", extra_toml=customers_only)) as client:
        registration = register(client)
        approved, _form, _verifier = _approve(client, registration)
        assert approved.status_code == 200 and 'id="mailed"' not in approved.text


def test_an_expired_or_forged_continuation_is_an_error_page(tmp_path):
    with gateway_client(make_config(tmp_path)) as client:
        registration = register(client)
        approved, _form, _verifier = _approve(client, registration)
        for handle in ("", "forged"):
            answer = client.post("/oauth/authorize/continue", data={"continue": handle})
            assert answer.status_code == 400 and "location" not in answer.headers
        gateway = client.app.state.gateway
        with gateway.sessions() as session, session.begin():
            (row,) = session.query(PushedRequest).filter(PushedRequest.kind == "continue")
            row.expires_at = 0
        handle = re.search(r'name="continue" value="([^"]+)"', approved.text).group(1)
        answer = client.post("/oauth/authorize/continue", data={"continue": handle})
        assert answer.status_code == 400 and "Your authorization stands" in answer.text
        assert client.post("/oauth/authorize/continue", content=b"\xff", headers={
            "content-type": "application/x-www-form-urlencoded"}).status_code == 400


def test_receipt_dates_in_the_customers_zone_to_the_minute(tmp_path):
    moment = datetime(2026, 12, 7, 19, 22, 54, 16093, tzinfo=UTC)  # the 2026-12-07T19:22:54.016093Z
    assert consent.local_minute(moment, ZoneInfo("America/Los_Angeles")) == \
        "December 7, 2026, 11:22 AM PST (UTC−08:00)"
    assert consent.local_minute(moment, ZoneInfo("Asia/Kolkata")) == "December 8, 2026, 12:52 AM IST (UTC+05:30)"
    assert consent.local_minute(moment, None) == "December 7, 2026, 7:22 PM UTC (UTC+00:00)"

    config = make_config(tmp_path, timezone="America/New_York")
    with gateway_client(config) as client:
        registration = register(client)
        approved, _form, _verifier = _approve(client, registration)
        shown = re.search(r'<time id="receipt-date" datetime="([^"]+)">([^<]+)</time>', approved.text)
        instant = datetime.fromisoformat(shown.group(1).replace("Z", "+00:00"))
        assert shown.group(2) == consent.local_minute(instant, ZoneInfo("America/New_York"))
        assert re.search(r" (AM|PM) E[SD]T \(UTC−0[45]:00\)$", shown.group(2))
        receipt = client.get(urlsplit(receipt_url_of(approved)).path)
        assert f'datetime="{shown.group(1)}">{shown.group(2)}</time>' in receipt.text


def test_an_upstream_customers_address_comes_from_their_account_data(database_url):
    """The custodian's customer data, once fetched, lands in the customer's accounts (ESPI electronicAddress →
    ``account_contacts`` typed ``email``): the primary address, from the newest account."""
    engine = make_engine(database_url)
    try:
        upgrade(engine)
        sessions = make_sessionmaker(engine)
        customer = "sandbox:https://dc.example/espi/1_1/resource/Batch/RetailCustomer/7"
        with sessions() as session, session.begin():
            assert consent.contact_email(session, customer) is None
            old = datetime(2026, 1, 1, tzinfo=UTC)
            new = datetime(2026, 6, 1, tzinfo=UTC)
            for object_id, modified, contacts in (
                ("a-old", old, [{"id": "c1", "types": ["email", "primary"], "value": "old@home.example"}]),
                ("a-new", new, [{"id": "c2", "types": ["phone_number", "primary"], "value": "+15555550100"},
                                {"id": "c3", "types": ["email", "secondary"], "value": "work@office.example"},
                                {"id": "c4", "types": ["email", "primary"], "value": "pat@home.example"}]),
            ):
                body = json.dumps({"cds_account_id": object_id, "account_contacts": contacts})
                session.add(DataObject(kind="accounts", object_id=object_id, customer_id=customer, created=modified,
                                       modified=modified, synced=modified, body=body, body_hash=object_id))
            session.add(DataObject(kind="accounts", object_id="other", customer_id="someone-else", created=new,
                                   modified=new, synced=new, body_hash="x", body=json.dumps(
                                       {"account_contacts": [{"types": ["email"], "value": "no@other.example"}]})))
        with sessions() as session:
            assert consent.contact_email(session, customer) == "pat@home.example"
            assert consent.contact_email(session, "nobody") is None
    finally:
        engine.dispose()


@pytest.mark.parametrize("toml, problem", [
    ('[smtp]\nfrom = "a@b.example"\n', "host is required"),
    ('[smtp]\nhost = "mail"\n', "from must be one e-mail address"),
    ('[smtp]\nhost = "mail"\nfrom = "not an address"\n', "from must be one e-mail address"),
    ('[smtp]\nhost = "mail"\nfrom = "a@b.example"\ntls = "ssl"\n', "tls must be one of"),
    ('[smtp]\nhost = "mail"\nfrom = "a@b.example"\nport = 0\n', "port must be a TCP port"),
    ('[smtp]\nhost = "mail"\nfrom = "a@b.example"\nusername = "u"\npassword_env = "GB_NO_SUCH_VAR"\n',
     "GB_NO_SUCH_VAR"),
    ('[smtp]\nhost = "mail"\nfrom = "a@b.example"\npassword = "inline"\n', "unknown keys ['password']"),
    ('[[test_customers]]\ncustomer_id = "c"\nname = "n"\npassword = "p"\nemail = "x@y\\nBcc: z@w"\n',
     "email must be one e-mail address"),
    ('[gateway]\ndemo = "yes"\n', "demo must be true or false"),
])
def test_receipt_mail_configuration_errors_name_the_key(tmp_path, toml, problem):
    path = tmp_path / "gb.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=re.escape(problem)):
        load_config(path, {"GREENBRIDGE_DATA_DIR": str(tmp_path / "var")})


def test_receipt_mail_configuration(tmp_path):
    path = tmp_path / "gb.toml"
    path.write_text('[smtp]\nhost = "mail.example"\nfrom = "r@gb.example"\ntls = "tls"\nusername = "u"\n'
                    'password_env = "GB_SMTP_PASSWORD"\n')
    config = load_config(path, {"GREENBRIDGE_DATA_DIR": str(tmp_path / "var"), "GB_SMTP_PASSWORD": "s3cret"})
    assert (config.smtp.host, config.smtp.port, config.smtp.tls, config.smtp.password) == \
        ("mail.example", 465, "tls", "s3cret")
    assert "s3cret" not in repr(config.smtp) and "s3cret" not in repr(config)
    assert load_config(None, {"GREENBRIDGE_DATA_DIR": str(tmp_path / "var")}).demo is None
    assert load_config(None, {"GREENBRIDGE_DATA_DIR": str(tmp_path / "var"), "GREENBRIDGE_DEMO": "on"}).demo is True
    with pytest.raises(ConfigError, match="GREENBRIDGE_DEMO must be on or off"):
        load_config(None, {"GREENBRIDGE_DATA_DIR": str(tmp_path / "var"), "GREENBRIDGE_DEMO": "maybe"})


def test_a_grant_revoked_before_continuing_gets_access_denied(tmp_path):
    with gateway_client(make_config(tmp_path)) as client:
        registration = register(client)
        approved, _form, _verifier = _approve(client, registration, state="s9")
        receipt = urlsplit(receipt_url_of(approved)).path
        assert client.post(receipt + "/revoke").status_code == 303
        answer = continue_to_client(client, approved)
        query = parse_qs(urlsplit(answer.headers["location"]).query)
        assert query["error"] == ["access_denied"] and query["state"] == ["s9"] and "code" not in query
        gateway = client.app.state.gateway
        with gateway.sessions() as session:
            assert [g.status for g in session.query(Grant)] == ["revoked"]




def test_a_custodians_customers_read_dates_in_its_local_time(tmp_path):
    from gateway.routes.oauth import custodian_zone

    custodian = """
[[custodians]]
id = "pge"
name = "Pacific Example"
resource_url = "https://dc.example/espi/1_1/resource"
authorize_url = "https://dc.example/oauth/authorize"
token_url = "https://dc.example/oauth/token"
client_id = "gb"
client_secret = "s"
"""
    path = tmp_path / "gb.toml"
    path.write_text(custodian + 'timezone = "America/Los_Angeles"\n')
    config = load_config(path, {"GREENBRIDGE_DATA_DIR": str(tmp_path / "var"), "GREENBRIDGE_TIMEZONE": "UTC"})
    assert custodian_zone(config, config.custodians[0]) == ZoneInfo("America/Los_Angeles")
    path.write_text(custodian)
    config = load_config(path, {"GREENBRIDGE_DATA_DIR": str(tmp_path / "var"), "GREENBRIDGE_TIMEZONE": "Europe/Paris"})
    assert custodian_zone(config, config.custodians[0]) == ZoneInfo("Europe/Paris")
    path.write_text(custodian + 'timezone = "Pacific/Atlantis"\n')
    with pytest.raises(ConfigError, match=r"\[\[custodians\]\] #1: timezone is not an IANA zone name"):
        load_config(path, {"GREENBRIDGE_DATA_DIR": str(tmp_path / "var")})
