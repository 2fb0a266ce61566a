"""`python -m gcrsync` is the `gcrsync` command."""

from gcrsync.cli import main

main()
