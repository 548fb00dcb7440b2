"""`python -m vidup` runs the CLI."""

from vidup.cli import main

if __name__ == "__main__":
    main()
