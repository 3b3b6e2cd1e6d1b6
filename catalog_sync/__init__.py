"""catalog_sync: bring a worker region's Lustre metadata up to date with its S3 dataset and publish the
region's datasets to the catalog without downtime. No Pulumi: runs in Lambda and in the local platform."""
