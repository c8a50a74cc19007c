"""The ``jobwatch`` command: parsing, commands, exit codes, demo and simulator."""
