"""OAuth resources of ESPI 4.0 (espi.md §6): ApplicationInformation and Authorization.

Both also exist in a pre-2019 shape (``thirdPartyApplicationName``, ``accessToken``, lower-case ``bearer``…,
espi.md §1.12); elements of that shape land in ``extra`` instead of failing. Fields that hold credentials are
excluded from ``repr`` so that a logged object never leaks a secret.
"""

from __future__ import annotations

from dataclasses import dataclass

from espi.model import nested, to_int, to_str, to_time, xml_field
from espi.usage import DateTimeInterval

_SECRET_EXTRA = frozenset({"accessToken", "access_token", "refresh_token", "refreshToken", "client_secret"})


@dataclass(frozen=True, slots=True)
class ApplicationInformation:
    """A third party's registration at a data custodian (espi.md §6.1, 36 elements)."""

    data_custodian_id: str | None = xml_field("dataCustodianId", to_str)
    data_custodian_application_status: int | None = xml_field("dataCustodianApplicationStatus", to_int)
    third_party_application_description: str | None = xml_field("thirdPartyApplicationDescription", to_str)
    third_party_application_status: int | None = xml_field("thirdPartyApplicationStatus", to_int)
    third_party_application_type: int | None = xml_field("thirdPartyApplicationType", to_int)
    third_party_application_use: int | None = xml_field("thirdPartyApplicationUse", to_int)
    third_party_phone: str | None = xml_field("thirdPartyPhone", to_str)
    authorization_server_uri: str | None = xml_field("authorizationServerUri", to_str)
    third_party_notify_uri: str | None = xml_field("thirdPartyNotifyUri", to_str)
    authorization_server_authorization_endpoint: str | None = xml_field(
        "authorizationServerAuthorizationEndpoint", to_str)
    authorization_server_registration_endpoint: str | None = xml_field(
        "authorizationServerRegistrationEndpoint", to_str)
    authorization_server_token_endpoint: str | None = xml_field("authorizationServerTokenEndpoint", to_str)
    data_custodian_bulk_request_uri: str | None = xml_field("dataCustodianBulkRequestURI", to_str)
    data_custodian_resource_endpoint: str | None = xml_field("dataCustodianResourceEndpoint", to_str)
    third_party_scope_selection_screen_uri: str | None = xml_field("thirdPartyScopeSelectionScreenURI", to_str)
    third_party_user_portal_screen_uri: str | None = xml_field("thirdPartyUserPortalScreenURI", to_str)
    client_secret: str | None = xml_field("client_secret", to_str, secret=True)
    logo_uri: str | None = xml_field("logo_uri", to_str)
    client_name: str | None = xml_field("client_name", to_str)
    client_uri: str | None = xml_field("client_uri", to_str)
    redirect_uris: tuple[str, ...] = xml_field("redirect_uri", to_str, many=True)
    client_id: str | None = xml_field("client_id", to_str)
    tos_uri: str | None = xml_field("tos_uri", to_str)
    policy_uri: str | None = xml_field("policy_uri", to_str)
    software_id: str | None = xml_field("software_id", to_str)
    software_version: str | None = xml_field("software_version", to_str)
    client_id_issued_at: int | None = xml_field("client_id_issued_at", to_time)
    client_secret_expires_at: int | None = xml_field("client_secret_expires_at", to_time)
    contacts: tuple[str, ...] = xml_field("contacts", to_str, many=True)
    token_endpoint_auth_method: str | None = xml_field("token_endpoint_auth_method", to_str)
    scopes: tuple[str, ...] = xml_field("scope", to_str, many=True)
    grant_types: tuple[str, ...] = xml_field("grant_types", to_str, many=True)
    response_types: str | None = xml_field("response_types", to_str)
    registration_client_uri: str | None = xml_field("registration_client_uri", to_str)
    registration_access_token: str | None = xml_field("registration_access_token", to_str, secret=True)
    data_custodian_scope_selection_screen_uri: str | None = xml_field(
        "dataCustodianScopeSelectionScreenURI", to_str)
    extra: tuple[tuple[str, str], ...] = ()

    def __repr__(self) -> str:  # extra may hold pre-2019 secrets: keep them out of logs
        return (f"ApplicationInformation(client_id={self.client_id!r}, data_custodian_id={self.data_custodian_id!r},"
                f" scopes={self.scopes!r})")


@dataclass(frozen=True, slots=True)
class Authorization:
    """One grant at a data custodian (espi.md §6.2): its scope and the URIs of the data it opens."""

    authorized_period: DateTimeInterval | None = xml_field("authorizedPeriod", nested(DateTimeInterval))
    published_period: DateTimeInterval | None = xml_field("publishedPeriod", nested(DateTimeInterval))
    status: int | None = xml_field("status", to_int)
    expires_at: int | None = xml_field("expires_at", to_time)
    grant_type: str | None = xml_field("grant_type", to_str)
    scope: str | None = xml_field("scope", to_str)
    token_type: str | None = xml_field("token_type", to_str)
    error: str | None = xml_field("error", to_str)
    error_description: str | None = xml_field("error_description", to_str)
    error_uri: str | None = xml_field("error_uri", to_str)
    resource_uri: str | None = xml_field("resourceURI", to_str)
    authorization_uri: str | None = xml_field("authorizationURI", to_str)
    customer_resource_uri: str | None = xml_field("customerResourceURI", to_str)
    extra: tuple[tuple[str, str], ...] = ()

    def __repr__(self) -> str:
        return (f"Authorization(status={self.status!r}, scope={self.scope!r}, resource_uri={self.resource_uri!r},"
                f" authorization_uri={self.authorization_uri!r})")

    def legacy_field(self, name: str) -> str | None:
        """A pre-2019 element kept in ``extra`` (e.g. ``thirdParty``); credentials are never returned here."""
        if name in _SECRET_EXTRA:
            return None
        for key, value in self.extra:
            if key == name:
                return value
        return None
