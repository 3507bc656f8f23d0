import sys

if __name__ == "__main__":  # not when a worker process (sources/parse_workers.py) imports the main module
    # Every process this starts logs JSON and renders nothing with rich, but structlog imports rich whenever it
    # is installed (a test or docs tool brings it along): about 100 modules and 5 MiB of RSS that a daemon
    # installed from requirements/run.txt never pays. None in sys.modules makes that import fail as absent.
    sys.modules.setdefault("rich", None)  # type: ignore[arg-type]
    from .cli import main

    raise SystemExit(main())
