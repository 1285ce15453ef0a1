"""Notification sources (issue 13 item 3): a custodian's ``[custodians.notify]`` networks and HTTP Basic credentials
on both notify URLs, the client address read through configured proxies only (``[gateway] trusted_proxies``,
X-Forwarded-For right to left), and their configuration errors. In-process (Starlette's TestClient with the client
address a test chooses); nothing refused is stored."""

from __future__ import annotations

import base64

import pytest
from gateway_helpers import BASE_URL, gateway_client, make_config
from sqlalchemy import select
from starlette.testclient import TestClient
from test_notification_receiver import custodian_toml

from bridge.config import ConfigError
from cds.store.models import Job

PASSWORD = "n0tify-" + "x" * 24
CUSTODIANS = (custodian_toml("dc", "https://dc.example") + """
[custodians.notify]
sources = ["203.0.113.0/24", "2001:db8::/32"]
""" + custodian_toml("basic", "https://basic.example") + f"""
[custodians.notify]
user = "basic-dc"
password = "{PASSWORD}"
""" + custodian_toml("both", "https://both.example") + f"""
[custodians.notify]
sources = ["192.0.2.0/24"]
user = "both-dc"
password = "{PASSWORD}"
""" + custodian_toml("open", "https://open.example"))
XML = {"Content-Type": "application/xml"}
GENERIC = "/espi/1_1/Notification"


def uri(custodian: str, n: int = 1) -> str:
    return f"https://{custodian}.example/espi/1_1/resource/Batch/Bulk/{n}"


def body(*uris: str) -> bytes:
    return ("<BatchList>" + "".join(f"<resources>{u}</resources>" for u in uris) + "</BatchList>").encode()


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


class Gateway:
    """One gateway (its lifespan run once) and requests from any client address."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    def post(self, path: str, content: bytes, address: str = "127.0.0.1", **headers: str):
        sender = TestClient(self.client.app, base_url=BASE_URL, client=(address, 40000))
        return sender.post(path, content=content, headers={**XML, **headers})

    def jobs(self) -> list[str]:
        with self.client.app.state.gateway.sessions() as session:
            return sorted(j.payload["uri"] for j in session.scalars(select(Job)))


@pytest.fixture
def gateway(tmp_path):
    with gateway_client(make_config(tmp_path, extra_toml=CUSTODIANS)) as client:
        yield Gateway(client)


@pytest.fixture
def proxied(tmp_path):
    text = '[gateway]\ntrusted_proxies = ["10.0.0.1", "10.1.0.0/16"]\n' + CUSTODIANS
    with gateway_client(make_config(tmp_path, extra_toml=text)) as client:
        yield Gateway(client)


def test_only_the_custodians_networks_may_notify_it(gateway):
    for address in ("203.0.113.7", "2001:db8::5", "::ffff:203.0.113.9"):
        answer = gateway.post("/custodians/dc/notify", body(uri("dc", 1)), address)
        assert answer.status_code == 200, (address, answer.text)
    for address in ("198.51.100.1", "203.0.114.1", "2001:db9::1", "testclient"):
        answer = gateway.post("/custodians/dc/notify", body(uri("dc", 2)), address)
        assert answer.status_code == 403, address
        assert "notify sources" in answer.text or "not an IP address" in answer.text, answer.text
    # refused before the body is read: garbage from a stranger is a 403, not a parse error
    assert gateway.post("/custodians/dc/notify", b"<not xml", "198.51.100.1").status_code == 403
    assert gateway.jobs() == [uri("dc", 1)]


def test_the_shared_url_needs_every_named_custodians_consent(gateway):
    # a stranger naming dc's resource and an unrestricted custodian's: nothing of it is acted on
    answer = gateway.post(GENERIC, body(uri("open", 1), uri("dc", 3)), "198.51.100.1")
    assert answer.status_code == 403 and gateway.jobs() == []
    assert gateway.post(GENERIC, body(uri("open", 1)), "198.51.100.1").status_code == 200
    assert gateway.post(GENERIC, body(uri("dc", 3), uri("open", 2)), "203.0.113.7").status_code == 200
    answer = gateway.post(GENERIC, body(uri("basic", 1), uri("open", 3)), "203.0.113.7")
    assert answer.status_code == 401 and answer.headers["www-authenticate"].startswith("Basic ")
    answer = gateway.post(GENERIC, body(uri("basic", 1), uri("both", 1)), "198.51.100.1",
                          **basic("basic-dc", PASSWORD))
    assert answer.status_code == 403  # a source refusal comes first
    assert gateway.jobs() == sorted([uri("open", 1), uri("dc", 3), uri("open", 2)])


def test_basic_credentials_on_the_notify_url(gateway):
    refused = [{}, basic("basic-dc", PASSWORD + "x"), basic("basic-dc", PASSWORD[:-1]), basic("other", PASSWORD),
               basic("basic-dc", ""), {"Authorization": "Basic !!!"}, {"Authorization": "Bearer " + PASSWORD},
               {"Authorization": "Basic " + base64.b64encode(b"basic-dc:\xff").decode()}]
    for headers in refused:
        answer = gateway.post("/custodians/basic/notify", body(uri("basic", 1)), **headers)
        assert answer.status_code == 401, headers
        assert answer.headers["www-authenticate"] == 'Basic realm="greenbridge notifications", charset="UTF-8"'
    assert gateway.jobs() == []
    for path in ("/custodians/basic/notify", GENERIC):
        assert gateway.post(path, body(uri("basic", 1)), **basic("basic-dc", PASSWORD)).status_code == 200
    # both conditions when both are configured
    assert gateway.post("/custodians/both/notify", body(uri("both", 1)), "198.51.100.1",
                        **basic("both-dc", PASSWORD)).status_code == 403
    assert gateway.post("/custodians/both/notify", body(uri("both", 1)), "192.0.2.10").status_code == 401
    assert gateway.post("/custodians/both/notify", body(uri("both", 1)), "192.0.2.10",
                        **basic("both-dc", PASSWORD)).status_code == 200
    assert gateway.jobs() == sorted([uri("basic", 1), uri("both", 1)])


def test_x_forwarded_for_is_believed_from_configured_proxies_only(gateway, proxied):
    def notify(target: Gateway, peer: str, forwarded: str, n: int) -> int:
        return target.post("/custodians/dc/notify", body(uri("dc", n)), peer,
                           **{"X-Forwarded-For": forwarded}).status_code

    # without trusted proxies the header is the sender's to write, and is ignored
    assert notify(gateway, "10.0.0.1", "203.0.113.7", 1) == 403
    # from a configured proxy, read right to left: the first address that is not a proxy is the client
    assert notify(proxied, "10.0.0.1", "203.0.113.7", 2) == 200
    assert notify(proxied, "10.0.0.1", "203.0.113.7, 10.1.2.3", 3) == 200  # two proxies
    assert notify(proxied, "10.0.0.1", "198.51.100.9, 203.0.113.7", 4) == 200  # what the client wrote is not it
    assert notify(proxied, "10.0.0.1", "203.0.113.7, 198.51.100.9", 5) == 403  # a spoofed entry the proxy got
    assert notify(proxied, "198.51.100.1", "203.0.113.7", 6) == 403  # not from a proxy: never believed
    assert notify(proxied, "10.0.0.2", "203.0.113.7", 7) == 403
    assert proxied.jobs() == sorted(uri("dc", n) for n in (2, 3, 4))


@pytest.mark.parametrize(("table", "fragment"), [
    ('sources = ["203.0.113.0/33"]', "not an IP address or network"),
    ('sources = "203.0.113.0/24"', "array of addresses"),
    ('user = "dc"', "go together"),
    (f'password = "{PASSWORD}"', "go together"),
    ('user = "dc"\npassword = "short"', "at least 16"),
    ('user = "d:c"\npassword = "' + PASSWORD + '"', "without ':'"),
    ('user = "dc"\npassword_env = "GB_TEST_UNSET_NOTIFY_PASSWORD"', "GB_TEST_UNSET_NOTIFY_PASSWORD"),
    ('surprise = 1', "unknown keys"),
    ("", "give sources"),
])
def test_notify_configuration_errors_name_the_key(tmp_path, table, fragment):
    text = custodian_toml("dc", "https://dc.example") + "\n[custodians.notify]\n" + table + "\n"
    with pytest.raises(ConfigError) as error:
        make_config(tmp_path, extra_toml=text)
    assert fragment in str(error.value) and "[[custodians]] #1: notify" in str(error.value)


def test_notify_password_from_the_environment_and_proxies_normalised(tmp_path):
    from bridge.config import load_config

    path = tmp_path / "gb.toml"
    path.write_text('[gateway]\ntrusted_proxies = ["10.0.0.1", " 10.1.0.0/16 ", "2001:db8::1"]\n'
                    + custodian_toml("dc", "https://dc.example")
                    + '\n[custodians.notify]\nuser = "dc"\npassword_env = "DC_NOTIFY"\n')
    config = load_config(path, {"GREENBRIDGE_SECRET_KEY": "k", "GREENBRIDGE_DATA_DIR": str(tmp_path),
                                "DC_NOTIFY": PASSWORD})
    assert config.trusted_proxies == ("10.0.0.1/32", "10.1.0.0/16", "2001:db8::1/128")
    (dc,) = config.custodians
    assert dc.notify.user == "dc" and dc.notify.password == PASSWORD and PASSWORD not in repr(dc.notify)
    path.write_text('[gateway]\ntrusted_proxies = ["proxy.example"]\n')
    with pytest.raises(ConfigError, match="trusted_proxies"):
        load_config(path, {"GREENBRIDGE_SECRET_KEY": "k", "GREENBRIDGE_DATA_DIR": str(tmp_path)})
