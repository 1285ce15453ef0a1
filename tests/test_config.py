"""Configuration: defaults, TOML, environment overrides, and errors that name the file and the key."""

from __future__ import annotations

import pytest
from conftest import REPO

from bridge.config import ConfigError, GatewayConfig, load_config


def write(tmp_path, text):
    path = tmp_path / "gb.toml"
    path.write_text(text)
    return path


def test_defaults_need_nothing(tmp_path):
    config = load_config(environ={"GREENBRIDGE_DATA_DIR": str(tmp_path)})
    assert config.issuer == "http://127.0.0.1:8080"
    assert config.database_url == f"sqlite+pysqlite:///{tmp_path / 'greenbridge.db'}"
    # a per-installation random key, kept private in the data dir and stable across restarts
    key = (tmp_path / "secret.key").read_text().strip()
    assert config.secret_key == key and len(key) >= 40
    assert oct((tmp_path / "secret.key").stat().st_mode & 0o777) == "0o600"
    assert load_config(environ={"GREENBRIDGE_DATA_DIR": str(tmp_path)}).secret_key == key
    assert config.server.op_tos_uri.startswith(config.issuer)


def test_environment_overrides_file(tmp_path):
    path = write(tmp_path, '[gateway]\nissuer = "https://a.example"\ntimezone = "America/Chicago"\n')
    config = load_config(path, {"GREENBRIDGE_ISSUER": "https://b.example", "GREENBRIDGE_SECRET_KEY": "k"})
    assert config.issuer == "https://b.example" and config.timezone == "America/Chicago"


def test_example_configuration_loads():
    config = load_config(REPO / "deploy" / "greenbridge.example.toml", {"GREENBRIDGE_SECRET_KEY": "k"})
    assert config.coverage[0]["id"] == "example-electric"
    assert config.smtp.tls == "starttls" and config.test_customers[0].email == "alex@example.com" and not config.demo
    assert config.fernet_key != GatewayConfig(secret_key="other").fernet_key


@pytest.mark.parametrize("text, fragment", [
    ('[gateway]\nissuer = "ftp://x"\n', "issuer"),
    ('[gateway]\nissuer = "http://public.example"\n', "https"),
    ('[gateway]\ntimezone = "Mars/Base"\n', "timezone"),
    ('[gateway]\npage_size = 0\n', "page_size"),
    ('[gateway]\nno_such_key = 1\n', "no_such_key"),
    ('[server]\ncolour = "green"\n', "colour"),
    ('[server]\ncreated = "2026-01-01T00:00:00"\n', "offset"),
    ('[[coverage]]\nid = "a"\n', "entity_name"),
    ('[[coverage]]\nid="a"\nentity_name="E"\ncountry="usa"\nname="n"\ntype="logical"\nrole="official"\n', "country"),
    ('[[coverage]]\nid="a"\nentity_name="E"\ncountry="US"\nname="n"\ntype="geographic"\nrole="official"\n',
     "geojson_resource"),
    ('[[coverage]]\nid="a"\nentity_name="E"\ncountry="US"\nname="n"\ntype="logical"\nrole="official"\n'
     'capabilities=["coverage"]\n', "coverage"),
    ("[gateway\n", "gb.toml"),
])
def test_errors_name_the_key(tmp_path, text, fragment):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_config(path, {"GREENBRIDGE_SECRET_KEY": "k", "GREENBRIDGE_DATA_DIR": str(tmp_path)})
    assert fragment in str(error.value)
    assert str(path) in str(error.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml", {})


CUSTODIAN = '''
[[custodians]]
id = "demo-utility"
name = "Demo Utility"
resource_url = "https://dc.demo-utility.example/espi/1_1/resource"
authorize_url = "https://login.demo-utility.example/oauth/authorize"
token_url = "https://login.demo-utility.example/oauth/token"
client_id = "tp-123"
client_secret_env = "DEMO_SECRET"
bulk_url = "https://bulk.demo-utility.example/exports"

[custodians.sftp]
host = "sftp.demo-utility.example"
user = "tp123"
key_path = "/etc/greenbridge/demo.key"
host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample"

[custodians.coverage]
country = "US"
commodity_types = ["electricity"]
'''


def test_custodians_with_secret_from_the_environment(tmp_path):
    path = write(tmp_path, CUSTODIAN)
    config = load_config(path, {"GREENBRIDGE_SECRET_KEY": "k", "DEMO_SECRET": "s3cret"})
    (custodian,) = config.custodians
    assert custodian.client_secret == "s3cret" and "s3cret" not in repr(custodian)
    # what is acted on lies under a configured endpoint (issue 13 item 1): resource_url and bulk_url, nothing else of
    # their hosts, and not the token endpoint's host
    from bridge.upstream import origins

    found = origins(custodian)
    assert found.allows("https://dc.demo-utility.example/espi/1_1/resource/Batch/Subscription/1")
    assert found.allows("https://bulk.demo-utility.example:443/exports/Batch/Bulk/1")
    assert not found.allows("https://bulk.demo-utility.example/other/Batch/Bulk/1")
    assert not found.allows("https://login.demo-utility.example/espi/1_1/resource/Batch/Bulk/1")
    assert not found.allows("https://dc.demo-utility.example:8443/espi/1_1/resource/Batch/Bulk/1")
    assert custodian.sftp.port == 22 and custodian.sftp.host_key.startswith("ssh-ed25519 ")
    # the custodian appears as a coverage entry of its own
    entry = next(e for e in config.coverage if e["id"] == "demo-utility")
    assert entry["entity_name"] == "Demo Utility" and entry["capabilities"] == ["oauth"]
    assert entry["type"] == "logical" and entry["role"] == "aggregator"
    assert custodian.scopes == ()  # none configured


def test_custodian_scope_strings(tmp_path):
    offered = "FB=4_5_15;IntervalDuration=3600;BlockDuration=monthly;HistoryLength=13"
    text = CUSTODIAN.replace('client_id = "tp-123"', f'client_id = "tp-123"\nscopes = ["{offered}", " FB=1_3_4_5 "]')
    (custodian,) = load_config(write(tmp_path, text), {"GREENBRIDGE_SECRET_KEY": "k", "DEMO_SECRET": "s"}).custodians
    assert custodian.scopes == (offered, "FB=1_3_4_5")


@pytest.mark.parametrize("old, new, fragment", [
    ('client_secret_env = "DEMO_SECRET"', 'client_secret_env = "MISSING"', "MISSING"),
    ("https://dc.demo-utility.example", "http://dc.demo-utility.example", "https"),
    ('id = "demo-utility"', 'id = "demo utility"', "id may contain"),
    ('host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample"', 'host_key = "x"', "host_key"),
    ('bulk_url = "https://bulk.demo-utility.example/exports"', 'hosts = "bulk"', "hosts"),
    # hosts used to widen fetching to whole hosts: a host it would add must become an endpoint (issue 13 item 1)
    ('bulk_url = "https://bulk.demo-utility.example/exports"', 'hosts = ["bulk.demo-utility.example"]', "bulk_url"),
    ('bulk_url = "https://bulk.demo-utility.example/exports"', 'bulk_url = "http://bulk.demo-utility.example/x"',
     "https"),
    ('client_id = "tp-123"', 'client_id = "tp-123"\nsurprise = 1', "surprise"),
    ('client_id = "tp-123"', 'client_id = "tp-123"\nscopes = "FB=4_5_15"', "scopes"),
    ('client_id = "tp-123"', 'client_id = "tp-123"\nscopes = ["FB=4_5_15", ""]', "scopes"),
])
def test_custodian_errors(tmp_path, old, new, fragment):
    text = CUSTODIAN.replace(old, new)
    assert text != CUSTODIAN
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, text), {"GREENBRIDGE_SECRET_KEY": "k", "DEMO_SECRET": "s"})
    assert fragment in str(error.value) and "[[custodians]] #1" in str(error.value)
