"""local_platform: the deployment twin. It runs on this machine what the Pulumi program declares for a stack (its
resource graph, recorded under mocks): the ECS services through the image's entrypoint, the nightly sync's
schedules, state machine and Lambda handler, per-region AWS emulations (moto) and Lustre stand-ins, and the
catalog stand-in; `status` lists what it does not run, and why."""
