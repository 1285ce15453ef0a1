"""A recording peer on 127.0.0.1 (tests/apps/listener.py under a real uvicorn) and the forged documents it serves:
the "other port of the custodian's host" of issue 13 item 1, or a custodian whose configured origin serves forged
Authorization and bulk feeds. Documents are written here (espi.generate, tests/espi_builders), never copied."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import httpx2
from conftest import REPO
from espi_builders import E, Ent, document
from servers import uvicorn_server

from espi.generate import FeedSpec, write_feed


@dataclass
class Listener:
    url: str

    def requests(self) -> list[dict[str, Any]]:
        answer = httpx2.get(f"{self.url}/__listener/requests", timeout=30)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def reset(self) -> None:
        assert httpx2.post(f"{self.url}/__listener/reset", timeout=30).status_code == 200

    def answer(self, answers: dict[str, dict[str, Any]]) -> None:
        """What each path answers: ``{path: {"status", "content_type", "body", "headers"}}``."""
        response = httpx2.put(f"{self.url}/__listener/answers", content=json.dumps(answers), timeout=30)
        assert response.status_code == 200, response.text

    def prove_it_listens(self) -> None:
        """A request of the test's own is seen (so "0 requests" later means something), then forgotten."""
        httpx2.get(f"{self.url}/espi/1_1/resource/Batch/Subscription/0", timeout=30)
        assert [r["path"] for r in self.requests()] == ["/espi/1_1/resource/Batch/Subscription/0"]
        self.reset()


@contextlib.contextmanager
def listener(log_path=None) -> Iterator[Listener]:
    with uvicorn_server("apps.listener:create_app", app_dir=REPO / "tests", health_path="/__listener/requests",
                        log_path=log_path) as url:
        yield Listener(str(url))


def token_answer(**uris: str) -> dict[str, Any]:
    """A token endpoint's answer (with the ESPI URIs given as ``resourceURI=…``)."""
    body = {"access_token": "forged-token", "token_type": "Bearer", "expires_in": 3600, **uris}
    return {"status": 200, "content_type": "application/json", "body": json.dumps(body)}


def authorization_feed(*entries: tuple[str | None, str | None, int] | dict[str, Any]) -> bytes:
    """An Authorization feed: one entry per (self href, authorizationURI, status) (status 0 Revoked, 1 Active), or
    per dict of ``self`` and Authorization elements (``status``, ``scope``, ``resourceURI``, ``authorizationURI``…,
    written in the schema's order)."""
    order = ("status", "scope", "resourceURI", "authorizationURI", "customerResourceURI")
    built = []
    for entry in entries:
        if not isinstance(entry, dict):
            self_href, authorization_uri, status = entry
            entry = {"self": self_href, "status": status, "authorizationURI": authorization_uri}
        content = [E(name, entry[name]) for name in order if entry.get(name) is not None]
        built.append(Ent(entry.get("self"), content=(E("Authorization", *content),)))
    return document(built)


def usage_feed(base: str, subscription: str, start: date, days: int = 2, seed: int = 97) -> bytes:
    """A generated feed whose hrefs name ``{base}/Subscription/{subscription}/…`` (a forged bulk or subscription
    answer naming a real customer's subscription), with readings of its own."""
    out = io.StringIO()
    write_feed(out, FeedSpec(usage_points=1, days=days, start=start, seed=seed, base_url=base,
                             subscription=subscription, summaries=False))
    return out.getvalue().encode()


def xml(body: bytes, status: int = 200) -> dict[str, Any]:
    return {"status": status, "content_type": "application/atom+xml", "body": body.decode()}
