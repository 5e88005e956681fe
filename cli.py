"""Thin shim: ``python cli.py ...`` is the same as the ``ceusflow`` console script."""

from ceusflow.cli import main

if __name__ == "__main__":
    main()
