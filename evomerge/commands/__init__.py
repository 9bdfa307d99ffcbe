"""One module per `evomerge` subcommand, each with `add_arguments(parser)` and `run(args) -> int`."""
