"""``python -m ops``: the same as the ``terrarium-ops`` console script."""

from ops.cli import main

if __name__ == "__main__":
    main()
