"""Facts the whole platform shares, said once: the Pulumi program, the scheduler's plugins, the workers, the nightly
sync, the notebook and the local platform all import them from here. Dependency-free (the standard library only,
and opensearch-py and boto3 imported inside the one function that needs them), in the data plane's wheel, so in
both images and the notebook kernel."""

from __future__ import annotations

# The catalog's document is declared in platform_facts/document.py (imported from there: this module stays
# standalone, as the catalog-access function ships it alone).

# ---------------------------------------------------------------------------------------------- pools
# Each region's workers carry the Dask resource `pool-<region>`; a task restricted to it runs in that region.
POOL_PREFIX = "pool-"


def pool_of_region(region: str) -> str:
    return f"{POOL_PREFIX}{region}"


def region_of_pool(pool: str) -> str:
    return pool.removeprefix(POOL_PREFIX)


def is_pool(resource: str) -> bool:
    return resource.startswith(POOL_PREFIX)


# ------------------------------------------------------------------------------------------ Dask settings
# dask_regions' section of Dask's config (dask_regions/dask_regions.yaml). Dask reads any setting from an
# environment variable too: DASK_, then the key in upper case with "." as "__" and "-" as "_".
DASK_REGIONS_SECTION = "dask-regions"


def dask_variable(key: str) -> str:
    """The environment variable that sets Dask's `key`: `distributed.comm.tls.ca-file` is
    DASK_DISTRIBUTED__COMM__TLS__CA_FILE."""
    return "DASK_" + key.upper().replace("-", "_").replace(".", "__")


# A worker region silent this long is cut off (`client.regionGraceSeconds`): Dask's own heartbeat limit, after which
# the scheduler removes the region's workers and dask_regions.routing fails the work that needs the region.
WORKER_TTL_VARIABLE = dask_variable("distributed.scheduler.worker-ttl")


def regions_variable(key: str) -> str:
    """The environment variable of a dask_regions setting: `demand.pools` is DASK_DASK_REGIONS__DEMAND__POOLS."""
    return dask_variable(f"{DASK_REGIONS_SECTION}.{key}")


# The scheduler stops when no client has been connected this long (`client.idleShutdownMinutes`, set on its task).
SCHEDULER_IDLE_SHUTDOWN_VARIABLE = regions_variable("idle-shutdown.after")
# The scheduler's ECS service as JSON (region, cluster, service), in the kernel's environment: connect() starts it.
SCHEDULER_SERVICE_VARIABLE = "DASK_PLATFORM_SCHEDULER_SERVICE"


# --------------------------------------------------------------------------------------------- places
# Where every worker sees its region's Lustre file system: the hosts mount it there, the ECS task maps it to the same
# path, and the catalog's paths start with it (/fsx/<region>/...).
FSX_MOUNT = "/fsx"
# Where a worker region with storage `s3` caches the byte ranges its workers read from the dataset's bucket: a
# directory of the host (its instance store when it has one) mounted at the same path in the worker task, and named
# to the workers by the `read-cache.directory` setting (dask_regions/cache.py).
READ_CACHE_MOUNT = "/var/cache/dask-regions"
READ_CACHE_VARIABLE = regions_variable("read-cache.directory")
# An AWS region code (us-east-1, ap-southeast-2, us-gov-west-1); pseudo-regions such as aws-global are none.
REGION_PATTERN = r"[a-z]{2}(?:-[a-z]+)+-\d+"

# --------------------------------------------------------------------------------------------- demand
# The scheduler publishes each pool's figure as this CloudWatch metric (dimensions Stack and Pool), in the pool's
# region; each region's scaling policy follows it.
METRIC_NAMESPACE = "CrossRegionDask"
METRIC_NAME = "DesiredTasks"

# ---------------------------------------------------------------------------------------------- ports
SCHEDULER_PORT = 8786
DASHBOARD_PORT = 8787
# Served on the scheduler's HTTP server by its platform preloads (dask_regions.startup): 200 only while the router
# and the demand plugin both run. The container's health check and the load balancer's target group ask it.
PLATFORM_HEALTH_PATH = "/dask-regions/health"

# --------------------------------------------------------------------------------------- the kernel's environment
# What a notebook kernel or shell needs to reach the platform (components/kernel.py writes it, dask_regions.connect
# and the local platform read or write it): the client certificate as Dask's TLS settings, and where the servers'
# logs are (CloudWatch log groups as JSON name -> {region, group} in AWS, a directory of log files locally).
TLS_ENVIRONMENT = {"ca": dask_variable("distributed.comm.tls.ca-file"),
                   "cert": dask_variable("distributed.comm.tls.client.cert"),
                   "key": dask_variable("distributed.comm.tls.client.key")}
LOG_GROUPS_VARIABLE = "DASK_PLATFORM_LOG_GROUPS"
# Every client the kernel starts runs these modules (Dask's client preloads): the crossing budget's check.
CLIENT_PRELOAD_VARIABLE = dask_variable("distributed.client.preload")
CLIENT_PRELOADS = ("dask_regions.budget",)
# dask-labextension's cluster factory (module, callable): JupyterLab's Dask sidebar lists the platform through it.
JUPYTERLAB_FACTORY = ("dask_regions.connect", "for_jupyterlab")
LOG_DIR_VARIABLE = "DASK_PLATFORM_LOG_DIR"

# -------------------------------------------------------------------------------------------- catalog
# Readers search the read alias; each region's sync loads `catalog-<region>-<dataset>-<stamp>` indices.
CATALOG_READ_ALIAS = "catalog"
CMIP6_FACETS = ("activity_id", "institution_id", "source_id", "experiment_id", "member_id", "table_id",
                "variable_id", "grid_label", "version")
ERA5_FACETS = ("year", "month", "variable")
ERA5_TIME_DIM = "time0"  # the dimension ERA5's monthly files are joined along
# A collection's kerchunk reference set (catalog_sync/references.py) holds, under this key beside kerchunk's
# "version" and "refs", the files it covers in order and the steps each holds: {"concat_dim", "files": [[path, n]]}.
REFERENCES_LAYOUT_KEY = "dask_regions"
FACETS = (*CMIP6_FACETS, *ERA5_FACETS)


def catalog_index_prefix(region: str) -> str:
    """Every load index of `region` starts with this; only that region's sync may write them."""
    return f"{CATALOG_READ_ALIAS}-{region}-"


# ------------------------------------------------------------------------------------ the S3 catalog
# `catalog.kind: s3`: each region's sync publishes its catalog as one SQLite file (the `datasets` table of the
# local platform's catalog) at `<location>/<region>.sqlite` in a versioned bucket of the client region; a swap is
# one PUT (a new version, visible at once), so readers see the old snapshot or the new one. A load is staged
# under `<location>/loads/<region>/<load id>/` until it is published or dropped.
CATALOG_SNAPSHOT_SUFFIX = ".sqlite"
CATALOG_SNAPSHOT_DOCUMENTS = "documents"  # the snapshot object's metadata: how many datasets it holds
CATALOG_LOADS = "loads"
# Where the catalog's bucket is served when not at AWS's endpoint for its region: the local platform's client-
# region emulation (a sync in another region would otherwise reach its own region's).
CATALOG_S3_ENDPOINT_VARIABLE = "CATALOG_S3_ENDPOINT_URL"


def catalog_snapshot_key(prefix: str, region: str) -> str:
    return "/".join(part for part in (prefix.strip("/"), f"{region}{CATALOG_SNAPSHOT_SUFFIX}") if part)


def catalog_load_prefix(prefix: str, region: str, load_id: str = "") -> str:
    return "/".join(part for part in (prefix.strip("/"), CATALOG_LOADS, region, load_id) if part) + "/"
