from .cli import main

if __name__ == "__main__":  # not when a worker process (sources/parse_workers.py) imports the main module
    raise SystemExit(main())
