"""`python -m evomerge ...`: the same as the `evomerge` console script."""

from evomerge.cli import console_main

if __name__ == "__main__":
    console_main()
