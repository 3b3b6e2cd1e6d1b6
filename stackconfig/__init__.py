"""The stack config, declared once: the schema and typed model (schema.py), AWS reference data (aws.py), the
checks (validate.py) and the loaders (load.py). The components, `plan`, the local platform and the data plane's
command lines all read a stack through it; it imports none of them."""

from stackconfig.addressing import LARGEST_VPC_PREFIX, MAX_AZS, MIN_AZS, SMALLEST_VPC_PREFIX, plan_subnets
from stackconfig.aws import fargate_problem, known_regions, schedule_problem, tag_value_problem
from stackconfig.load import load_from_pulumi, load_stack_file, raw_stack_config
from stackconfig.project import PROJECT_DIR
from stackconfig.schema import (
    CATALOG_KEYS,
    CLIENT_KEYS,
    CLIENT_SITE,
    MAX_WORKER_REGIONS,
    PROJECT_NAME,
    TOP_LEVEL_KEYS,
    WORKER_KEYS,
    CatalogConfig,
    ClientConfig,
    ConfigError,
    GroupConfig,
    Key,
    Problem,
    S3Location,
    Site,
    StackConfig,
    UserConfig,
    WorkerConfig,
    describe_keys,
)
from stackconfig.validate import parse_stack_config

__all__ = [
    "CATALOG_KEYS",
    "CLIENT_KEYS",
    "CLIENT_SITE",
    "LARGEST_VPC_PREFIX",
    "MAX_AZS",
    "MAX_WORKER_REGIONS",
    "MIN_AZS",
    "PROJECT_DIR",
    "PROJECT_NAME",
    "SMALLEST_VPC_PREFIX",
    "TOP_LEVEL_KEYS",
    "WORKER_KEYS",
    "CatalogConfig",
    "ClientConfig",
    "ConfigError",
    "GroupConfig",
    "Key",
    "Problem",
    "S3Location",
    "Site",
    "StackConfig",
    "UserConfig",
    "WorkerConfig",
    "describe_keys",
    "fargate_problem",
    "known_regions",
    "load_from_pulumi",
    "load_stack_file",
    "parse_stack_config",
    "plan_subnets",
    "raw_stack_config",
    "schedule_problem",
    "tag_value_problem",
]
