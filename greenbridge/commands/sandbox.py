"""``greenbridge sandbox``: run the sandbox Green Button data custodian (OAuth, ESPI REST, BatchLists) on uvicorn."""

from __future__ import annotations

import argparse
import logging
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sandbox",
        help="run a sandbox Green Button Connect My Data custodian",
        description="Serve a Connect My Data data custodian for tests and demos: an OAuth authorize page where "
                    "sandbox customers sign in, the token endpoint, ApplicationInformation, Authorization and the "
                    "ESPI REST resources, BatchList notifications, deferred (202) answers and SFTP bulk files. "
                    "Customers come from a directory of ESPI files (--data) or from the generator (--generate). "
                    "Settings: --config FILE (TOML), then GREENBRIDGE_SANDBOX_* variables, then these flags "
                    "(docs/sandbox.md).",
    )
    parser.add_argument("--config", metavar="FILE", help="TOML configuration file")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default: the base URL's port, else 8900)")
    parser.add_argument("--base-url", help="public base URL (default http://HOST:PORT)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--data", metavar="DIR", help="directory of ESPI XML files: one customer per usage file")
    source.add_argument("--generate", type=int, metavar="N", help="N generated customers (default 3)")
    parser.add_argument("--days", type=int, metavar="N", help="days of generated data (default 31)")
    parser.add_argument("--start", metavar="YYYY-MM-DD", help="first day of generated data (default 2025-01-01)")
    parser.add_argument("--password", help="password of every sandbox customer (default 'sandbox')")
    parser.add_argument("--defer", type=float, metavar="SECONDS",
                        help="answer 202 to Batch/Subscription and Batch/Bulk, then POST a BatchList after SECONDS")
    parser.add_argument("--bulk-dir", metavar="DIR", help="write bulk feeds as files here (SFTP delivery)")
    parser.add_argument("--sftp-uri", metavar="URI",
                        help="sftp://user@host[:port]/path under which --bulk-dir is served (names files in "
                             "BatchLists)")
    parser.add_argument("--no-notify-on-new-data", dest="notify_on_new_data", action="store_false", default=None,
                        help="do not send BatchLists when a customer's data grows")
    parser.add_argument("--notify-window", dest="notify_window", action="store_true", default=None,
                        help="new-data BatchLists name the subscription with the new data's published window "
                             "(default: the plain Batch/Subscription/{id}, the same URI every time)")
    parser.add_argument("--response-delay", type=float, metavar="SECONDS",
                        help="hold Batch/Subscription and Batch/Bulk answers SECONDS after building them (a slow "
                             "custodian)")
    parser.add_argument("--delete-authorization-status", type=int, choices=(204, 405, 501), metavar="STATUS",
                        help="answer DELETE Authorization with 405 or 501 (a custodian that cannot revoke over its "
                             "API; default 204: revoked)")
    parser.add_argument("--trait", action="append", dest="traits", metavar="TRAIT",
                        help="a trait of real files the generated customers' feeds carry (repeat for several; "
                             "greenbridge generate --help lists them)")
    parser.add_argument("--client-id", help="client_id of the (first) third party (default third_party)")
    parser.add_argument("--client-secret", help="its client_secret (default secret)")
    parser.add_argument("--redirect-uri", action="append", dest="redirect_uris", metavar="URI",
                        help="its redirect URI (repeat for several)")
    parser.add_argument("--notify-uri", help="its notification URI (thirdPartyNotifyUri)")
    parser.add_argument("--scope", action="append", dest="scopes", metavar="SCOPE",
                        help="a scope string offered to it (repeat for several; default: docs/sandbox.md)")
    parser.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path
    from urllib.parse import urlsplit

    import uvicorn

    from espi.errors import EspiError
    from sandbox.config import DEFAULT_BASE_URL, SandboxConfigError, load_sandbox_config

    overrides = {
        "base_url": args.base_url, "data_dir": args.data, "generate_customers": args.generate,
        "generate_days": args.days, "generate_start": args.start, "customer_password": args.password,
        "generate_traits": args.traits,
        "defer": args.defer, "bulk_dir": args.bulk_dir, "sftp_uri": args.sftp_uri,
        "notify_on_new_data": args.notify_on_new_data, "notify_window": args.notify_window,
        "response_delay": args.response_delay, "delete_authorization_status": args.delete_authorization_status,
        "client_id": args.client_id,
        "client_secret": args.client_secret, "redirect_uris": args.redirect_uris, "notify_uri": args.notify_uri,
        "scopes": args.scopes,
    }
    try:
        config = load_sandbox_config(args.config, env=os.environ, **overrides)
        port = args.port or urlsplit(config.base_url).port or 8900
        if config.base_url == DEFAULT_BASE_URL and (args.port or args.host != "127.0.0.1"):
            host = args.host if args.host not in ("0.0.0.0", "::") else "127.0.0.1"
            config = config.with_overrides(base_url=f"http://{host}:{port}")
        if config.data_dir is not None:
            config = config.with_overrides(data_dir=Path(config.data_dir).resolve())
        logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        from sandbox.app import create_sandbox_app

        app = create_sandbox_app(config)
    except (SandboxConfigError, EspiError, OSError) as error:
        print(f"greenbridge sandbox: {error}", file=sys.stderr)
        return 2
    sandbox = app.state.sandbox
    print(f"greenbridge sandbox custodian on http://{args.host}:{port} (base URL {config.base_url}; "
          f"{len(sandbox.store.customers)} customers, password list on the home page)", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=port, log_level=args.log_level)
    return 0
