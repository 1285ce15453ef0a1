"""The walkthrough's steps, as the demo third party lives them (no HTTP request or response objects here).

1. :meth:`Walkthrough.start`: register (once per process), push the authorization request, remember the PKCE
   verifier and the state in the browser's session, and return the consent page's URL;
2. the customer approves on greenbridge's consent page, then at the custodian's (the browser's part);
3. :meth:`Walkthrough.finish`: the callback: the state must be the session's, the code is exchanged;
4. :meth:`Walkthrough.progress`: the Grant's status, until it leaves ``pending``; then the usage segments, as daily
   kWh per meter and as the raw JSON pages.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import msgspec

from bridge.config import GatewayConfig
from cds.secrets import SecretBox
from gateway.demo.client import DemoClient, DemoClientError, Registration
from gateway.demo.sessions import DemoSessions, SessionCookie
from gateway.demo.usage import MeterDays, chart, daily_kwh

CLIENT_NAME = "Try-it demo app"
WINDOW_DAYS = 31
#: What the demo asks for: what its chart shows and no more, delivered electricity. Meter and contract numbers,
#: costs, demand and exports are not needed (and a Green Button custodian may not offer them: asking would make the
#: Grant partial for nothing, and tell the customer so on the consent page).
DETAILS = {"type": "cds_usage_1", "include_meter_numbers": False, "include_contract_numbers": False,
           "include_usage_segment_value_types": ["electric_usage_forward"]}


def requested_details(zone, now: datetime | None = None) -> list[dict[str, Any]]:
    """The request, with a window of whole days: from local midnight :data:`WINDOW_DAYS` days ago (a relative
    ``P31D`` would start at this time of day, cutting the first day of a daily chart short)."""
    today = (now or datetime.now(zone)).astimezone(zone).date()
    first = datetime.combine(today - timedelta(days=WINDOW_DAYS), datetime.min.time(), zone)
    return [{**DETAILS, "segment_start": first.isoformat()}]


class WalkthroughError(Exception):
    """A step cannot go on; the message is for the person trying it."""


@dataclass
class Progress:
    stage: str  # "none" (nothing started), "waiting" (grant pending), "ready", "ended" (revoked, expired…)
    grant: dict[str, Any] = field(default_factory=dict)
    meters: list[MeterDays] = field(default_factory=list)
    chart: dict[str, Any] | None = None
    pages: list[str] = field(default_factory=list)  # each listing page's JSON, indented for reading


class Walkthrough:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        box = SecretBox(config.fernet_key, config.derived_key("demo-session-files"))
        self.sessions = DemoSessions(config.data_dir.resolve() / "demo" / "sessions", box)
        self.cookie = SessionCookie(config.derived_key("demo-session-cookie"))
        self.client = DemoClient(config.issuer, config.url("/try/callback"))
        self._csrf_key = config.derived_key("demo-csrf")
        self._registration: Registration | None = None
        self._registering = asyncio.Lock()

    def csrf_token(self, session_id: str) -> str:
        return hmac.new(self._csrf_key, session_id.encode(), "sha256").hexdigest()

    def csrf_ok(self, session_id: str, token: str) -> bool:
        return hmac.compare_digest(self.csrf_token(session_id), token)

    async def _registered(self, again: bool = False) -> Registration:
        """The demo third party's registration, made once per process (and again if the server forgot it)."""
        async with self._registering:
            if self._registration is None or again:
                self._registration = await self.client.register(CLIENT_NAME)
            return self._registration

    async def start(self, session_id: str) -> str:
        registration = await self._registered()
        try:
            pushed = await self.client.push(registration, requested_details(self.config.zone))
        except DemoClientError as error:
            if "invalid_client" not in str(error):
                raise
            registration = await self._registered(again=True)  # e.g. the store was reset since
            pushed = await self.client.push(registration, requested_details(self.config.zone))
        self.sessions.save(session_id, {"registration": registration.to_json(), "verifier": pushed["verifier"],
                                        "state": pushed["state"], "started": time.time()})
        return pushed["authorize_url"]

    def state(self, session_id: str | None) -> dict[str, Any]:
        return self.sessions.load(session_id) if session_id else {}

    async def finish(self, session_id: str | None, params: dict[str, str]) -> None:
        state = self.state(session_id)
        if not state.get("state") or not hmac.compare_digest(params.get("state", ""), state["state"]):
            raise WalkthroughError("This answer does not belong to a walkthrough started in this browser; "
                                   "start again.")
        if "error" in params:
            raise WalkthroughError(f"The authorization did not complete: {params.get('error')} "
                                   f"({params.get('error_description', '')}).")
        registration = Registration(**state["registration"])
        tokens = await self.client.exchange(registration, params.get("code", ""), state["verifier"])
        if not tokens["grant_ids"]:
            raise WalkthroughError("The token response named no grant.")
        self.sessions.save(session_id, {"registration": state["registration"], "tokens": tokens,
                                        "started": state.get("started")})

    async def progress(self, session_id: str | None) -> Progress:
        state = self.state(session_id)
        tokens = state.get("tokens")
        if not tokens:
            return Progress("none")
        registration = Registration(**state["registration"])
        grant = await self.client.grant(registration, tokens["grant_ids"][0])
        if grant.get("status") == "pending":
            return Progress("waiting", grant)
        if grant.get("status") not in ("active", "partial"):
            return Progress("ended", grant)
        if tokens["expires_at"] < time.time() + 30 and tokens.get("refresh_token"):
            tokens = {**await self.client.refresh(registration, tokens["refresh_token"]),
                      "grant_ids": tokens["grant_ids"], "authorization_details": tokens["authorization_details"]}
            self.sessions.save(session_id, {**state, "tokens": tokens})
        segments, pages = await self.client.usage_segments(tokens["access_token"])
        zone = self.config.zone
        today = datetime.now(zone).date()
        first = _window_start(tokens, zone) or today - timedelta(days=WINDOW_DAYS)
        meters = daily_kwh(segments, zone)
        return Progress("ready", grant, meters, chart(meters, first, today),
                        [msgspec.json.format(page.encode(), indent=2).decode() for page in pages])


def _window_start(tokens: dict[str, Any], zone) -> Any:
    """The first day of the window the server granted (the token response's absolute ``segment_start``)."""
    for entry in tokens.get("authorization_details") or []:
        value = entry.get("segment_start")
        if isinstance(value, str) and value[:1].isdigit():
            try:
                moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
            return moment.astimezone(zone).date() if moment.tzinfo else moment.date()
    return None
