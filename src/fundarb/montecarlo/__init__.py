"""Monte Carlo studies: bootstrap paths from real history, run them through
the simulator, locally or on a Dask cluster; parameter sweeps."""
