"""``python -m sdi.cli``."""

from sdi.cli import main

main()
