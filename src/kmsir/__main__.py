"""``python -m kmsir`` is the same program as ``kmsir``."""

from kmsir.cli import main

if __name__ == "__main__":
    main()
