"""Run fakedet from a checkout without installing: ``python cli.py extract DATA``."""
from fakedet.cli import main

if __name__ == "__main__":
    main()
