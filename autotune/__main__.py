import sys

from autotune.cli import main

if __name__ == "__main__":  # not when multiprocessing's fork server imports the main module
    sys.exit(main())
