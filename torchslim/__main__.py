import sys

if __name__ == "__main__":  # importing this module (e.g. by name) must not run the command
    try:
        from .cli.main import main
    except KeyboardInterrupt:  # Ctrl-C in the first few milliseconds, while the CLI imports
        print("torchslim: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(main())
