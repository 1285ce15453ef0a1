"""One module per `greenbridge` subcommand; each has ``register(subparsers)`` and a ``run(args) -> int``."""
