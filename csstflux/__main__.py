"""``python -m csstflux``: the same command line as the ``csstflux`` script."""

from csstflux.cli.main import main

if __name__ == "__main__":
    main()
