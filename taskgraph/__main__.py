"""``python -m taskgraph`` is the ``taskgraph`` command."""

from taskgraph.cli import main

if __name__ == "__main__":
    main()
