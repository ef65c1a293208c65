"""One module per `moenas` subcommand; each exposes ``register(subparsers)``."""
