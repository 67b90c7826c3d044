"""``python -m lipcli`` (and ``torchrun -m lipcli``) runs the command-line app."""

from lipcli.cli.app import main

main()
