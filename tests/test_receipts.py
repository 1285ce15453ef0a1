"""Authorization Receipts (WG3-01 §9.4): a random URL, no login, noindex, revoke without login."""

from __future__ import annotations

from gateway_helpers import consent_flow, gateway_client, make_config, register

from cds import consent
from cds.store.models import Client, Grant


def test_receipt_page_and_revoke_without_login(tmp_path):
    with gateway_client(make_config(tmp_path)) as client:
        registration = register(client)
        tokens = consent_flow(client, registration)
        gateway = client.app.state.gateway
        usage = registration.client_for("cds_usage_1")
        with gateway.sessions() as session, session.begin():
            # a re-authorization of the same grant issues a new receipt; its handle is what the customer gets
            grant = session.get(Grant, tokens["cds_grant_ids"][0])
            _grant, handle = consent.approve(
                session, session.get(Client, usage["client_id"]), scope=grant.scope,
                authorization_details=list(grant.authorization_details), customer_id=grant.customer_id, state=None,
                grant_id=grant.grant_id, descriptions=gateway.descriptions, box=gateway.box)
        page = client.get(f"/receipts/{handle}")
        assert page.status_code == 200
        assert '<meta name="robots" content="noindex, nofollow">' in page.text
        confirmation = page.text.split('id="confirmation">', 1)[1].split("<", 1)[0]
        assert 'id="status">active<' in page.text
        with gateway.sessions() as session:
            assert confirmation in session.get(Grant, tokens["cds_grant_ids"][0]).receipt_confirmations

        assert client.get("/receipts/not-a-real-handle").status_code == 404
        assert client.post("/receipts/not-a-real-handle/revoke").status_code == 404

        revoked = client.post(f"/receipts/{handle}/revoke")
        assert revoked.status_code == 303 and revoked.headers["location"].endswith(f"/receipts/{handle}")
        assert 'id="status">revoked<' in client.get(f"/receipts/{handle}").text
        auth = registration.auth_for("cds_usage_1")
        assert client.post("/oauth/introspect", data={"token": tokens["access_token"]}, auth=auth).json() == \
            {"active": False}
        refresh = client.post("/oauth/token", auth=auth, data={"grant_type": "refresh_token",
                                                               "refresh_token": tokens["refresh_token"]})
        assert refresh.status_code == 400 and refresh.json()["error"] == "invalid_grant"
