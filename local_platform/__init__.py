"""local_platform: the platform a stack config describes, on this machine: per worker region an S3
emulation (moto) holding its dataset, a Lustre stand-in directory and a pool of real `dask worker`
processes; in the client region a `dask scheduler` with the region router and the catalog."""
