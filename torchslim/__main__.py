import sys

from .cli.main import main

if __name__ == "__main__":  # importing this module (e.g. by name) must not run the command
    sys.exit(main())
