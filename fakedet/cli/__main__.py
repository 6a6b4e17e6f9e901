"""``python -m fakedet.cli``."""
from . import main

main()
