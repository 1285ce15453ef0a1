"""Every URL the gateway publishes, built from the issuer; one place so metadata, objects and routes agree."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Urls:
    base: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "base", self.base.rstrip("/"))

    # CDS-WG1-01 discovery
    @property
    def server_metadata(self) -> str:
        return self.base + "/.well-known/cds-server-metadata.json"

    @property
    def legacy_server_metadata(self) -> str:
        return self.base + "/.well-known/carbon-data-spec.json"

    @property
    def oauth_metadata(self) -> str:
        return self.base + "/.well-known/oauth-authorization-server"

    @property
    def coverage(self) -> str:
        return self.base + "/cds/coverage"

    # OAuth endpoints (RFC 6749, 7009, 7591, 7662, 9126)
    @property
    def authorization_endpoint(self) -> str:
        return self.base + "/oauth/authorize"

    @property
    def token_endpoint(self) -> str:
        return self.base + "/oauth/token"

    @property
    def registration_endpoint(self) -> str:
        return self.base + "/oauth/register"

    @property
    def par_endpoint(self) -> str:
        return self.base + "/oauth/par"

    @property
    def introspection_endpoint(self) -> str:
        return self.base + "/oauth/introspect"

    @property
    def revocation_endpoint(self) -> str:
        return self.base + "/oauth/revoke"

    @property
    def default_redirect_uri(self) -> str:
        return self.base + "/oauth/default-redirect"

    # CDS-WG1-02 admin APIs
    @property
    def clients_api(self) -> str:
        return self.base + "/cds-api/v1/clients"

    @property
    def credentials_api(self) -> str:
        return self.base + "/cds-api/v1/credentials"

    @property
    def grants_api(self) -> str:
        return self.base + "/cds-api/v1/grants"

    @property
    def messages_api(self) -> str:
        return self.base + "/cds-api/v1/messages"

    def client(self, client_id: str) -> str:
        return f"{self.clients_api}/{client_id}"

    def client_server_metadata(self, client_id: str) -> str:
        return f"{self.clients_api}/{client_id}/cds-server-metadata"

    def credential(self, credential_id: str) -> str:
        return f"{self.credentials_api}/{credential_id}"

    def grant(self, grant_id: str) -> str:
        return f"{self.grants_api}/{grant_id}"

    def message(self, message_id: str) -> str:
        return f"{self.messages_api}/{message_id}"

    # CDS-WG3-01 customer data listings (§10); the metadata field names are singular for bills (WG3-01 §5)
    @property
    def accounts_api(self) -> str:
        return self.base + "/cds-api/v1/accounts"

    @property
    def servicecontracts_api(self) -> str:
        return self.base + "/cds-api/v1/service-contracts"

    @property
    def servicepoints_api(self) -> str:
        return self.base + "/cds-api/v1/service-points"

    @property
    def meterdevices_api(self) -> str:
        return self.base + "/cds-api/v1/meter-devices"

    @property
    def billstatement_api(self) -> str:
        return self.base + "/cds-api/v1/bill-statements"

    @property
    def billsection_api(self) -> str:
        return self.base + "/cds-api/v1/bill-sections"

    @property
    def usagesegments_api(self) -> str:
        return self.base + "/cds-api/v1/usage-segments"

    def data_api(self, listing: str) -> str:
        """The listing URL for a listing name (``usage_segments``, ``bill_statements``…)."""
        return {
            "accounts": self.accounts_api,
            "service_contracts": self.servicecontracts_api,
            "service_points": self.servicepoints_api,
            "meter_devices": self.meterdevices_api,
            "bill_statements": self.billstatement_api,
            "bill_sections": self.billsection_api,
            "usage_segments": self.usagesegments_api,
        }[listing]

    # Human pages
    @property
    def human_registration(self) -> str:
        return self.base + "/register"

    @property
    def test_accounts(self) -> str:
        return self.base + "/test-accounts"

    @property
    def documentation(self) -> str:
        return self.base + "/docs"

    def receipt(self, handle: str) -> str:
        return f"{self.base}/receipts/{handle}"
