"""``greenbridge serve``: run the gateway (Starlette on uvicorn) with the configuration from file and environment."""

from __future__ import annotations

import argparse
import logging
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the CDS gateway",
        description="Serve CDS discovery, OAuth, registration and admin APIs. Configuration: --config FILE (TOML) or "
                    "$GREENBRIDGE_CONFIG, then GREENBRIDGE_* environment variables (docs/configuration.md). With no "
                    "configuration at all it runs on 127.0.0.1:8080 with a SQLite store in ./var.",
    )
    parser.add_argument("--config", metavar="FILE", help="TOML configuration file")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None,
                        help="port (default: the issuer URL's port, else 8080)")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (default 1)")
    parser.add_argument("--proxy-headers", action="store_true",
                        help="trust X-Forwarded-* from --forwarded-allow-ips (behind a TLS proxy)")
    parser.add_argument("--forwarded-allow-ips", default="127.0.0.1")
    parser.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import os
    from urllib.parse import urlsplit

    import uvicorn

    from gateway.config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(f"greenbridge serve: {error}", file=sys.stderr)
        return 2
    from gateway.config import GatewayConfig

    port = args.port or urlsplit(config.issuer).port or 8080
    if config.issuer == GatewayConfig().issuer and (args.port or args.host != "127.0.0.1"):
        # No issuer configured: the local default follows where we actually listen.
        host = args.host if args.host not in ("0.0.0.0", "::") else "127.0.0.1"
        config = config.with_overrides(issuer=f"http://{host}:{port}")
    if args.config:
        # Worker processes rebuild the app from the environment.
        os.environ["GREENBRIDGE_CONFIG"] = os.path.abspath(args.config)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print(f"greenbridge gateway on http://{args.host}:{port} (issuer {config.issuer}, "
          f"store {_safe_url(config.database_url)})", file=sys.stderr, flush=True)
    if args.workers > 1:
        uvicorn.run("gateway.app:create_app", factory=True, host=args.host, port=port, workers=args.workers,
                    proxy_headers=args.proxy_headers, forwarded_allow_ips=args.forwarded_allow_ips,
                    log_level=args.log_level)
        return 0
    from gateway.app import create_app

    uvicorn.run(create_app(config), host=args.host, port=port, proxy_headers=args.proxy_headers,
                forwarded_allow_ips=args.forwarded_allow_ips, log_level=args.log_level)
    return 0


def _safe_url(url: str) -> str:
    """The database URL without its password (never log secrets)."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
