"""The consent hop's choice of utility: which configured Green Button custodians can serve a CDS authorization
request, and what each would deliver of it (docs/mapping.md §11.5).

A request of custodian-specific scopes (``cds_usage_sandbox``) implies its custodian; generic scopes
(``cds_usage_1``) may go to any of them. For each candidate, :func:`bridge.custodian_scopes.plan_delivery` says which
of its scope strings to ask for and what the Grant will carry: include fields and value-type lists mean "include
what exists", so a utility that lacks part of a request still serves the rest, and the Grant is ``partial``
(CDS-WG1-02 §8.2). The gateway uses this three times:

* at PAR, a request that no candidate can serve at all is refused (``invalid_authorization_details``, 400), so a
  customer is never asked to approve what cannot be delivered;
* the consent page lists each candidate with what it will not provide, before the customer approves;
* after the customer chose one and authorized at its site, the plan is made again for the scope string the utility
  actually granted (custodians may narrow it), and the Grant is created with the plan's ``enabled_*``.

Plain functions over plain data (the custodians are :class:`bridge.config.CustodianConfig`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bridge.custodian_scopes import CustodianCannotProvide, DeliveryPlan, plan_delivery


@dataclass(frozen=True, slots=True)
class CustodianOption:
    """One utility the customer may choose: what it would deliver (``plan``), or why it cannot serve the request
    at all (``refusal``)."""

    custodian: Any
    plan: DeliveryPlan | None
    refusal: str | None = None

    @property
    def omitted(self) -> list[str]:
        """What this utility will not provide, in words (empty when it serves the whole request)."""
        return [] if self.plan is None else [o.text for o in self.plan.omissions]


def implied_custodian(scope_custodians: Mapping[str, str], scope: str | None) -> tuple[str | None, str | None]:
    """(the custodian a request's custodian-specific scopes imply, or None; an error text when they name
    several: one authorization reaches one utility)."""
    owners = dict.fromkeys(scope_custodians[s] for s in (scope or "").split() if s in scope_custodians)
    if len(owners) > 1:
        return None, ("The request holds scopes of several utilities (" + ", ".join(owners)
                      + "); one authorization reaches one utility.")
    return next(iter(owners), None), None


def descriptions_for(custodian_id: str, descriptions: Mapping[str, Any],
                     scope_custodians: Mapping[str, str]) -> dict[str, Any]:
    """The generic scope descriptions and this custodian's own (another custodian's are never part of a request
    that reaches this one)."""
    return {scope_id: description for scope_id, description in descriptions.items()
            if scope_custodians.get(scope_id, custodian_id) == custodian_id}


def plan_for(custodian: Any, scope: str, effective: Sequence[Mapping[str, Any]], *, descriptions: Mapping[str, Any],
             scope_custodians: Mapping[str, str], now: datetime, timezone: str,
             offered: Iterable[str] | None = None) -> DeliveryPlan:
    """``custodian``'s plan for the request (``offered``: the scope strings to choose from; its configured ones by
    default, or the one it granted). :class:`CustodianCannotProvide` when it can deliver nothing of it."""
    try:
        return plan_delivery(scope.split(), effective, custodian.scopes if offered is None else offered,
                             descriptions_for(custodian.id, descriptions, scope_custodians), now=now,
                             timezone=timezone)
    except CustodianCannotProvide:
        raise
    except ValueError:
        raise CustodianCannotProvide("the request holds no customer-data scope for the utility to authorize") \
            from None


def options(custodians: Iterable[Any], scope: str, effective: Sequence[Mapping[str, Any]], *,
            descriptions: Mapping[str, Any], scope_custodians: Mapping[str, str], now: datetime,
            timezone: str) -> list[CustodianOption]:
    """Every custodian the request may reach (only the implied one for custodian-specific scopes), in
    configuration order, with its plan or its refusal."""
    implied, _error = implied_custodian(scope_custodians, scope)
    found = []
    for custodian in custodians:
        if implied is not None and custodian.id != implied:
            continue
        try:
            found.append(CustodianOption(custodian, plan_for(
                custodian, scope, effective, descriptions=descriptions, scope_custodians=scope_custodians, now=now,
                timezone=timezone)))
        except CustodianCannotProvide as error:
            found.append(CustodianOption(custodian, None, str(error)))
    return found


def check_servable(found: Sequence[CustodianOption]) -> None:
    """:class:`CustodianCannotProvide` unless at least one utility can deliver part of the request; its
    description names each utility's reason."""
    if not found or any(option.plan is not None for option in found):
        return
    reasons = "; ".join(f"{option.custodian.name}: {option.refusal}" for option in found)
    raise CustodianCannotProvide(f"no utility this server reaches can provide any part of this request ({reasons})")
