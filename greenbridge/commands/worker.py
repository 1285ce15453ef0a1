"""``greenbridge worker`` and ``greenbridge beat``: the Celery worker and scheduler, configured like the gateway."""

from __future__ import annotations

import argparse
import sys

QUEUE_NAMES = ("http", "sftp", "translate", "notify")  # workers.jobs.QUEUES (kept import-free for --help)


def register(subparsers: argparse._SubParsersAction) -> None:
    worker = subparsers.add_parser(
        "worker",
        help="run a Celery worker for the upstream jobs (needs Redis)",
        description="Run a Celery worker that executes greenbridge jobs (fetch, SFTP, translate, notify) from the "
                    "Redis broker named by redis_url / GREENBRIDGE_REDIS_URL. The store is migrated first. Run one "
                    "worker per queue set for production (e.g. --queues http --concurrency 32, --queues sftp "
                    "--concurrency 2), and exactly one `greenbridge beat` next to them.",
    )
    worker.add_argument("--config", metavar="FILE", help="TOML configuration file (default: $GREENBRIDGE_CONFIG)")
    worker.add_argument("--queues", "-Q", default=",".join(QUEUE_NAMES), metavar="LIST",
                        help=f"comma-separated queues to consume (default: {','.join(QUEUE_NAMES)})")
    worker.add_argument("--concurrency", "-c", type=int, default=None, metavar="N",
                        help="pool processes (default: the number of CPUs)")
    worker.add_argument("--pool", "-P", default="prefork", choices=("prefork", "threads", "solo"),
                        help="execution pool (default prefork)")
    worker.add_argument("--hostname", "-n", default=None, help="worker node name (default greenbridge@HOST)")
    worker.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    worker.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                        help="serve this worker's Prometheus metrics (task runtimes, upstream requests, SFTP bytes, "
                             "readings stored) at http://ADDRESS:PORT/metrics; on a machine running the gateway its "
                             "/metrics shows them already")
    worker.add_argument("--metrics-address", default="127.0.0.1", metavar="ADDRESS",
                        help="address of --metrics-port (default 127.0.0.1)")
    worker.set_defaults(run=run_worker)

    beat = subparsers.add_parser(
        "beat",
        help="run the Celery beat scheduler (the job reconciler); run exactly one",
        description="Run Celery beat, which schedules gb.reconcile every minute: it re-publishes jobs whose message "
                    "was lost and retries that came due. Only one beat may run per deployment.",
    )
    beat.add_argument("--config", metavar="FILE", help="TOML configuration file (default: $GREENBRIDGE_CONFIG)")
    beat.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    beat.set_defaults(run=run_beat)


def _app(command: str, config_path: str | None, *, migrate: bool, log_level: str = "info"):
    from bridge.config import ConfigError, load_config
    from espi.private_files import private_dir
    from workers.app import make_celery

    try:
        config = load_config(config_path)
        app = make_celery(config)
    except (ConfigError, ValueError) as exc:
        print(f"greenbridge {command}: {exc}", file=sys.stderr)
        return None
    if config.json_logs:
        from celery.signals import setup_logging

        from bridge import logs

        @setup_logging.connect(weak=False)
        def _json_logs(**_kwargs) -> None:  # connected: Celery leaves logging to us
            logs.configure(True, log_level)
    if migrate:
        from cds.store.engine import make_engine
        from cds.store.migrate import upgrade

        engine = make_engine(config.database_url)
        try:
            upgrade(engine)
        finally:
            engine.dispose()
    private_dir(config.data_dir)
    return app


def run_worker(args: argparse.Namespace) -> int:
    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    unknown = sorted(set(queues) - set(QUEUE_NAMES))
    if not queues or unknown:
        print(f"greenbridge worker: --queues takes {','.join(QUEUE_NAMES)}; unknown: {','.join(unknown) or '(none)'}",
              file=sys.stderr)
        return 2
    if args.concurrency is not None and args.concurrency < 1:
        print("greenbridge worker: --concurrency must be at least 1", file=sys.stderr)
        return 2
    if args.metrics_port is not None and not 0 < args.metrics_port < 65536:
        print("greenbridge worker: --metrics-port must be a TCP port", file=sys.stderr)
        return 2
    app = _app("worker", args.config, migrate=True, log_level=args.log_level)
    if app is None:
        return 2
    _start_metrics(app.greenbridge_config, args, queues)
    argv = ["worker", "--queues", ",".join(queues), "--pool", args.pool, "--loglevel", args.log_level.upper(),
            "--without-gossip", "--without-mingle"]
    if args.concurrency is not None:
        argv += ["--concurrency", str(args.concurrency)]
    if args.hostname:
        argv += ["--hostname", args.hostname]
    app.worker_main(argv)
    return 0


def _start_metrics(config, args: argparse.Namespace, queues: list[str]) -> None:
    """Prometheus multi-process mode in ``metrics_dir/worker-<node>`` (emptied now; the pool processes forked
    later write their files there), and, with ``--metrics-port``, an HTTP endpoint adding those files up."""
    from bridge import metrics

    node = args.hostname or f"default-{'-'.join(queues)}"
    directory = metrics.start_multiprocess(config.metrics_dir, f"worker-{node}")
    if args.metrics_port is not None:
        from prometheus_client import CollectorRegistry, start_http_server
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(directory))
        start_http_server(args.metrics_port, addr=args.metrics_address, registry=registry)


def run_beat(args: argparse.Namespace) -> int:
    app = _app("beat", args.config, migrate=False, log_level=args.log_level)
    if app is None:
        return 2
    app.start(["beat", "--loglevel", args.log_level.upper()])
    return 0
