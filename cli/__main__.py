"""`python -m cli ...`: the same as the `sleepd` command."""

from cli.main import main

main()
