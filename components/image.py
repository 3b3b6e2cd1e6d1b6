"""RegionalImage: build a container image once and publish it to an ECR repository in every region that
runs it: the Dask image (scheduler, workers, notebook kernels) and the catalog-sync Lambda image.

A repository per region (rather than ECR registry replication) because replication is one configuration
per account and region: two teams' stacks would overwrite each other's rules. Tasks pull from their own
region and reference the image by digest, so every region runs the same bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_docker as docker

from stackconfig import PROJECT_DIR
from wheel_build import DIST_DIR, constraints, wheel

KEEP_IMAGES = 20


@dataclass(frozen=True)
class ImageSpec:
    """What goes into an image: its Dockerfile, the files it copies and the packages whose code it ships."""

    dockerfile: str
    files: tuple[str, ...]
    packages: tuple[str, ...]


# Both images install the data plane's one wheel (wheel_build/__init__.py): its sources are inputs of both.
WHEEL_PACKAGES = ("dask_regions", "catalog_sync", "platform_facts")
DASK_IMAGE = ImageSpec("images/dask/Dockerfile", ("requirements.txt", "pyproject.toml", "images/dask/healthcheck.py",
                                                 "images/dask/entrypoint.py"), WHEEL_PACKAGES)
CATALOG_SYNC_IMAGE = ImageSpec("images/catalog-sync/Dockerfile", ("requirements.txt", "pyproject.toml"), WHEEL_PACKAGES)


def dask_container_checks(log_group: str, region: str, stream_prefix: str, start_period: int) -> dict[str, Any]:
    """A Dask image container's health check (the image's own script, images/dask/healthcheck.py) and its logs
    (awslogs): the scheduler's and the workers' alike, but for how long each may take to start."""
    return {"healthCheck": {"command": ["CMD", "python", "/opt/dask/healthcheck.py"], "interval": 30, "timeout": 5,
                            "retries": 3, "startPeriod": start_period},
            "logConfiguration": {"logDriver": "awslogs", "options": {
                "awslogs-group": log_group, "awslogs-region": region, "awslogs-stream-prefix": stream_prefix}}}


def content_tag(spec: ImageSpec = DASK_IMAGE, root: Path = PROJECT_DIR) -> str:
    """An immutable tag from the bytes that go into the image: a new tag exactly when the image changes."""
    digest = hashlib.sha256()
    files = [root / f for f in (spec.dockerfile, *spec.files)]
    files += sorted(p for package in spec.packages for p in (root / package).rglob("*")
                    if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")
    for path in files:
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@dataclass
class RegionalImageArgs:
    spec: ImageSpec
    home_region: str  # where the image is built and first pushed
    providers: Mapping[str, aws.Provider]  # every region that runs the image
    key_arns: Mapping[str, pulumi.Input[str]]  # KMS key per region for the repositories


class RegionalImage(pulumi.ComponentResource):
    """`references[region]` is `<repository url>@sha256:<digest>` in that region."""

    references: dict[str, pulumi.Output[str]]
    repository_arns: dict[str, pulumi.Output[str]]
    digest: pulumi.Output[str]

    def __init__(self, name: str, args: RegionalImageArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("crossregiondask:index:RegionalImage", name, None, opts)
        tag = content_tag(args.spec)
        constraints()  # dist/constraints.txt, which the Dockerfiles copy
        repositories: dict[str, aws.ecr.Repository] = {}
        credentials: dict[str, pulumi.Output[aws.ecr.GetAuthorizationTokenResult]] = {}
        for region, provider in args.providers.items():
            child = pulumi.ResourceOptions(parent=self, provider=provider)
            repository = aws.ecr.Repository(
                f"{name}-{region}",
                image_tag_mutability="IMMUTABLE",
                image_scanning_configuration=aws.ecr.RepositoryImageScanningConfigurationArgs(scan_on_push=True),
                encryption_configurations=[aws.ecr.RepositoryEncryptionConfigurationArgs(
                    encryption_type="KMS", kms_key=args.key_arns[region])],
                opts=child,
            )
            aws.ecr.LifecyclePolicy(f"{name}-{region}-keep-recent", repository=repository.name, policy=json.dumps({
                "rules": [{"rulePriority": 1, "description": f"keep the {KEEP_IMAGES} newest images",
                           "selection": {"tagStatus": "any", "countType": "imageCountMoreThan",
                                         "countNumber": KEEP_IMAGES},
                           "action": {"type": "expire"}}],
            }), opts=child)
            repositories[region] = repository
            credentials[region] = aws.ecr.get_authorization_token_output(
                registry_id=repository.registry_id, opts=pulumi.InvokeOutputOptions(parent=self, provider=provider))

        home = args.home_region
        built = docker.Image(
            f"{name}-build",
            image_name=pulumi.Output.concat(repositories[home].repository_url, ":", tag),
            build=docker.DockerBuildArgs(context=str(PROJECT_DIR), dockerfile=str(PROJECT_DIR / args.spec.dockerfile),
                                         platform="linux/amd64",
                                         args={"WHEEL": wheel().relative_to(DIST_DIR).as_posix()}),
            registry=docker.RegistryArgs(server=repositories[home].repository_url,
                                         username=credentials[home].user_name, password=credentials[home].password),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.references = {home: built.repo_digest}
        for region, repository in repositories.items():
            if region == home:
                continue
            registry = docker.Provider(f"{name}-registry-{region}", registry_auth=[docker.ProviderRegistryAuthArgs(
                address=credentials[region].proxy_endpoint, username=credentials[region].user_name,
                password=credentials[region].password)], opts=pulumi.ResourceOptions(parent=self))
            target = docker.Tag(f"{name}-tag-{region}", source_image=built.repo_digest,
                                target_image=pulumi.Output.concat(repository.repository_url, ":", tag),
                                opts=pulumi.ResourceOptions(parent=self, provider=registry))
            pushed = docker.RegistryImage(f"{name}-push-{region}", name=target.target_image, keep_remotely=True,
                                          opts=pulumi.ResourceOptions(parent=self, provider=registry))
            self.references[region] = pulumi.Output.concat(repository.repository_url, "@", pushed.sha256_digest)
        self.repository_arns = {region: repository.arn for region, repository in repositories.items()}
        self.digest = built.repo_digest.apply(lambda reference: reference.rpartition("@")[2])
        self.register_outputs({"references": self.references, "digest": self.digest})
