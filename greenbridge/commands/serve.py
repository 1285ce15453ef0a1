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
                    "configuration at all it runs on 127.0.0.1:8080 with a SQLite store in ./var. With no Redis URL "
                    "configured it runs the whole bridge: its own redis-server on a private unix socket, a worker, "
                    "beat and, when no [[custodians]] are configured, the sandbox custodian; Ctrl-C stops them all.",
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
    parser.add_argument("--no-embedded", dest="embedded", action="store_false",
                        help="with no Redis URL configured, serve the gateway alone (no Redis, worker, beat or sandbox "
                             "started; jobs wait in the store until workers run)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import os
    from urllib.parse import urlsplit

    import uvicorn

    from bridge.config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(f"greenbridge serve: {error}", file=sys.stderr)
        return 2
    from bridge.config import GatewayConfig

    port = args.port or urlsplit(config.issuer).port or 8080
    if config.issuer == GatewayConfig().issuer and (args.port or args.host != "127.0.0.1"):
        # No issuer configured: the local default follows where we actually listen.
        host = args.host if args.host not in ("0.0.0.0", "::") else "127.0.0.1"
        config = config.with_overrides(issuer=f"http://{host}:{port}")
    from bridge import logs, metrics

    if config.json_logs:
        logs.configure(True, args.log_level)
    else:
        logging.basicConfig(level=args.log_level.upper(), format=logs.TEXT_FORMAT)
    # Prometheus multi-process mode for this process and the uvicorn workers it starts (bridge.metrics): the
    # directory is this gateway's (named by its port: two gateways on one machine listen on two ports), emptied now.
    metrics.start_multiprocess(config.metrics_dir, f"gateway-{port}")
    if not config.redis_url and args.embedded:
        return _run_embedded(args, config, port)
    from greenbridge.embedded import port_taken

    taken = port_taken(port, args.host)  # uvicorn would exit with a bare errno; say what to do instead
    if taken is not None:
        print(f"greenbridge serve: {taken}", file=sys.stderr)
        return 2
    if args.config:
        # Worker processes rebuild the app from the environment.
        os.environ["GREENBRIDGE_CONFIG"] = os.path.abspath(args.config)
    print(f"greenbridge gateway on http://{args.host}:{port} (issuer {config.issuer}, "
          f"store {_safe_url(config.database_url)})", file=sys.stderr, flush=True)
    if args.workers > 1:
        uvicorn.run("gateway.app:create_app", factory=True, host=args.host, port=port, workers=args.workers,
                    proxy_headers=args.proxy_headers, forwarded_allow_ips=args.forwarded_allow_ips,
                    log_level=args.log_level, **_log_options(config, args.log_level))
        return 0
    from gateway.app import create_app

    uvicorn.run(create_app(config), host=args.host, port=port, proxy_headers=args.proxy_headers,
                forwarded_allow_ips=args.forwarded_allow_ips, log_level=args.log_level,
                **_log_options(config, args.log_level))
    return 0


def _log_options(config, log_level: str) -> dict:
    """uvicorn's logging: its own by default; with ``json_logs`` one JSON handler in every worker process and no
    access lines (the gateway writes a structured line per request: gateway.observability)."""
    if not config.json_logs:
        return {}
    from bridge import logs

    return {"log_config": logs.uvicorn_log_config(True, log_level), "access_log": False}


def _run_embedded(args: argparse.Namespace, config, port: int) -> int:
    """The whole bridge in one command (greenbridge.embedded): children first, then the gateway in the foreground;
    a stop request or a dead child stops the gateway, then every child."""
    import os
    import signal

    import uvicorn

    from greenbridge.embedded import Bridge, EmbeddedError, Interrupted

    if args.workers > 1:
        print("greenbridge serve: --workers needs a Redis you run (GREENBRIDGE_REDIS_URL, with `greenbridge worker` "
              "and `greenbridge beat` beside it): the one-command bridge serves the gateway in one process",
              file=sys.stderr)
        return 2
    bridge = Bridge(config, config_path=args.config or os.environ.get("GREENBRIDGE_CONFIG") or None, port=port,
                    host=args.host, log_level=args.log_level)
    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, bridge.request_stop) for sig in handled}
    code = 0
    try:
        gateway_config = bridge.start()
        os.environ.update(bridge.env)  # this process now sees what the children see
        from gateway.app import create_app

        server = _bridge_server(uvicorn.Config(create_app(gateway_config), host=args.host, port=port,
                                               proxy_headers=args.proxy_headers,
                                               forwarded_allow_ips=args.forwarded_allow_ips,
                                               log_level=args.log_level, **_log_options(config, args.log_level)),
                                bridge)
        bridge.say(bridge.summary())
        bridge.watch(server.stop_soon)
        if bridge.stopping.is_set():
            raise Interrupted()
        try:
            server.run()
        except SystemExit:  # uvicorn exits when it cannot start (e.g. the port was taken meanwhile)
            if bridge.failure is None:
                bridge.failure = f"the gateway could not start on {args.host}:{port}"
    except Interrupted:
        pass
    except EmbeddedError as error:
        print(f"greenbridge serve: {error}", file=sys.stderr, flush=True)
        code = error.exit_code
    finally:
        bridge.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if bridge.failure is not None:
        print(f"greenbridge serve: stopped because {bridge.failure}", file=sys.stderr, flush=True)
        return code or 1
    if code == 0:
        print("greenbridge serve: the bridge stopped cleanly", file=sys.stderr, flush=True)
    return code


def _bridge_server(config, bridge):
    """uvicorn's server, telling the bridge when a signal asks it to stop (so children exiting on the same Ctrl-C,
    which reaches the whole process group, are not taken for failures)."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            super().handle_exit(sig, frame)  # first: uvicorn takes a second SIGINT (should_exit already set) as force
            bridge.request_stop(sig)

        def stop_soon(self) -> None:
            self.should_exit = True

    return Server(config)


def _safe_url(url: str) -> str:
    """The database URL without its password (never log secrets)."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
