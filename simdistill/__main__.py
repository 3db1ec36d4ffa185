from simdistill.cli import main

if __name__ == "__main__":  # guarded: Dask's spawned workers re-import the main module
    main()
