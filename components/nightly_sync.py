"""NightlySync: per worker region, EventBridge Scheduler starts a Step Functions workflow that imports the
file system's metadata, rebuilds the region's catalog in time-boxed Lambda steps and swaps it in. Failures
alarm and leave the previous catalog serving."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pulumi
import pulumi_aws as aws

from catalog_sync import environment as sync_environment
from components.iam import catalog_writer_statements, lambda_in_vpc_statements, s3_catalog_writer_statements
from components.naming import Naming
from components.network import RegionalVpc
from components.ports import HTTPS_PORT
from components.regional import RegionalComponent
from components.security_groups import security_group
from stackconfig import WorkerConfig

LAMBDA_TIMEOUT_SECONDS = 900
IMPORT_POLL_SECONDS = 60
IMPORT_MAX_POLLS = 240  # four hours
SCHEDULE_RETRIES = 3
SCHEDULE_MAX_AGE_SECONDS = 3600
RETRYABLE_LAMBDA_ERRORS = ["Lambda.ServiceException", "Lambda.AWSLambdaException", "Lambda.SdkClientException",
                           "Lambda.TooManyRequestsException"]


def workflow_definition(function_arn: str, *, import_metadata: bool = True) -> dict[str, Any]:
    """The Step Functions (ASL) definition: import -> poll (capped) -> index in steps -> reference sets in steps
    -> swap; any failure after the load began drops the load. Without `import_metadata` (storage `s3`: no file
    system) it starts at the index."""
    def invoke(payload: dict[str, Any], result: str, next_state: str, catch: str | None) -> dict[str, Any]:
        state: dict[str, Any] = {
            "Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
            "Parameters": {"FunctionName": function_arn, "Payload": payload},
            "ResultSelector": {"result.$": "$.Payload"}, "ResultPath": result, "Next": next_state,
            "Retry": [{"ErrorEquals": RETRYABLE_LAMBDA_ERRORS, "IntervalSeconds": 5, "MaxAttempts": 3,
                       "BackoffRate": 2.0}],
        }
        if catch:
            state["Catch"] = [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": catch}]
        return state

    definition: dict[str, Any] = {
        "Comment": "Nightly catalog sync of one worker region",
        "StartAt": "StartImport",
        "States": {
            "StartImport": invoke({"action": "start_import"}, "$.import", "WaitForImport", "ImportFailed"),
            "WaitForImport": {"Type": "Wait", "Seconds": IMPORT_POLL_SECONDS, "Next": "PollImport"},
            "PollImport": invoke({"action": "poll_import", "taskId.$": "$.import.result.taskId",
                                  "polls.$": "$.import.result.polls"}, "$.import", "ImportFinished?",
                                 "ImportFailed"),
            "ImportFinished?": {"Type": "Choice", "Choices": [
                {"And": [{"Variable": "$.import.result.done", "BooleanEquals": True},
                         {"Variable": "$.import.result.succeeded", "BooleanEquals": True}], "Next": "BeginIndex"},
                {"Variable": "$.import.result.done", "BooleanEquals": True, "Next": "ImportFailed"},
                {"Variable": "$.import.result.polls", "NumericGreaterThanEquals": IMPORT_MAX_POLLS,
                 "Next": "ImportFailed"},
            ], "Default": "WaitForImport"},
            "BeginIndex": {"Type": "Pass", "Result": {"result": {"done": False, "checkpoint": None}},
                           "ResultPath": "$.index", "Next": "Index"},
            "Index": invoke({"action": "index", "checkpoint.$": "$.index.result.checkpoint"}, "$.index",
                            "Indexed?", "Abort"),
            "Indexed?": {"Type": "Choice", "Choices": [
                {"Variable": "$.index.result.done", "BooleanEquals": True, "Next": "BeginReferences"}],
                "Default": "Index"},
            # Each collection's pieces, written while indexing, combined into its reference set, in steps.
            "BeginReferences": {"Type": "Pass", "Result": {"result": {"done": False, "after": ""}},
                                "ResultPath": "$.references", "Next": "Reference"},
            "Reference": invoke({"action": "reference", "checkpoint.$": "$.index.result.checkpoint",
                                 "after.$": "$.references.result.after"}, "$.references", "Referenced?", "Abort"),
            "Referenced?": {"Type": "Choice", "Choices": [
                {"Variable": "$.references.result.done", "BooleanEquals": True, "Next": "Swap"}],
                "Default": "Reference"},
            "Swap": invoke({"action": "swap", "checkpoint.$": "$.index.result.checkpoint"}, "$.swap", "Done",
                           "Abort"),
            "Done": {"Type": "Succeed"},
            "Abort": invoke({"action": "abort", "checkpoint.$": "$.index.result.checkpoint"}, "$.aborted",
                            "SyncFailed", "SyncFailed"),
            "ImportFailed": {"Type": "Fail", "Error": "ImportFailed",
                             "Cause": "The metadata import failed; the previous catalog is still serving."},
            "SyncFailed": {"Type": "Fail", "Error": "CatalogSyncFailed",
                           "Cause": "The new catalog was dropped; the previous catalog is still serving."},
        },
    }
    if not import_metadata:
        states = definition["States"]
        for name in ("StartImport", "WaitForImport", "PollImport", "ImportFinished?", "ImportFailed"):
            del states[name]
        definition["StartAt"] = "BeginIndex"
    return definition


@dataclass
class NightlySyncArgs:
    config: WorkerConfig
    vpc: RegionalVpc
    file_system_id: pulumi.Input[str] | None  # None with storage `s3`: no import, records point into the bucket
    file_system_arn: pulumi.Input[str] | None
    image: pulumi.Input[str]  # the catalog-sync Lambda image by digest, in this region
    catalog_endpoint: pulumi.Input[str]
    catalog_arn: pulumi.Input[str]  # the domain's, or (catalog_kind s3) the bucket's
    catalog_region: str
    schedule: str
    max_drop_percent: int
    key_arn: pulumi.Input[str]
    naming: Naming
    log_retention_days: int
    references_bucket: pulumi.Input[str]  # where the sync writes the collections' reference sets
    references_bucket_arn: pulumi.Input[str]
    association_id: pulumi.Input[str] = ""  # the data repository association: a new one gets a first sync
    catalog_kind: str = "opensearch"
    catalog_key_arn: pulumi.Input[str] | None = None  # the S3 catalog's key (the client region's)


FIRST_SYNC_DELAY = timedelta(minutes=5)  # after the state machine exists (the association is ready by then)


def first_sync_expression(_: object = None) -> str:
    """A one-time `at()` a few minutes from now, in UTC (computed when the schedule's inputs resolve during
    `pulumi up`, so that it lies in the future however long the deploy took)."""
    return f"at({(datetime.now(UTC) + FIRST_SYNC_DELAY):%Y-%m-%dT%H:%M:%S})"


def published_count_parameter(naming: Naming, region: str) -> str:
    return "/" + naming.resource(region, "catalog-published-count")


class NightlySync(RegionalComponent):
    role_arn: pulumi.Output[str]
    state_machine_arn: pulumi.Output[str]
    alarm_topic_arn: pulumi.Output[str]

    def __init__(self, name: str, args: NightlySyncArgs, opts: pulumi.ResourceOptions) -> None:
        super().__init__("crossregiondask:index:NightlySync", name, args.vpc.vpc_id, opts)
        self._args = args
        account = aws.get_caller_identity_output(opts=self._invoke).account_id
        role, function = self._function(name, account)
        machine = self._workflow(name, function)
        dead_letters = self._schedules(name, machine, account)
        topic = self._alarms(name, machine, dead_letters)
        self.role_arn = role.arn
        self.state_machine_arn = machine.arn
        self.alarm_topic_arn = topic.arn
        self.register_outputs({"roleArn": self.role_arn, "stateMachineArn": self.state_machine_arn,
                               "alarmTopicArn": self.alarm_topic_arn})

    def _function(self, name: str, account: pulumi.Output[str]) -> tuple[aws.iam.Role, aws.lambda_.Function]:
        """The sync's Lambda function (the catalog-sync image), its role, its security group and the region's
        published count."""
        args, region = self._args, self._args.config.region
        function_name = args.naming.resource(region, "catalog-sync", max_length=64)
        function_logs = self._log_group("function", f"/aws/lambda/{function_name}")
        sync_sg = security_group(name, "Catalog sync: AWS APIs and the catalog only", args.vpc.vpc_id, self._child)
        self._rule("out", sync_sg, "to-https", (HTTPS_PORT, HTTPS_PORT), cidr="0.0.0.0/0",
                   description="FSx and S3 APIs (NAT, gateway endpoint) and the catalog")
        # The region's last published catalog size, outside the catalog: the shrink guard holds even when the
        # domain lost its indices (catalog_sync/published.py). The sync writes it; `pulumi up` leaves it be.
        counts = aws.ssm.Parameter(f"{name}-published-count", name=published_count_parameter(args.naming, region),
                                   type="String", value="none", tier="Standard",
                                   description="Datasets the catalog sync last published for this region",
                                   opts=self._opts(ignore_changes=["value"]))
        role = self._role("function", "lambda.amazonaws.com", pulumi.Output.all(
            function_logs.arn, args.file_system_arn, args.catalog_arn, account, counts.arn,
            args.references_bucket_arn, args.key_arn, args.catalog_key_arn).apply(
                lambda v: self._function_statements(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7])))
        function = aws.lambda_.Function(
            f"{name}-function", name=function_name, package_type="Image", image_uri=args.image,
            image_config=aws.lambda_.FunctionImageConfigArgs(commands=["catalog_sync.handlers.handle"]),
            role=role.arn, timeout=LAMBDA_TIMEOUT_SECONDS, memory_size=1024, architectures=["x86_64"],
            reserved_concurrent_executions=1,  # one sync per region at a time
            vpc_config=aws.lambda_.FunctionVpcConfigArgs(subnet_ids=args.vpc.private_subnet_ids,
                                                         security_group_ids=[sync_sg.id]),
            environment=aws.lambda_.FunctionEnvironmentArgs(variables=sync_environment.variables(
                file_system_id=args.file_system_id, dataset=args.config.dataset.uri,
                fsx_path=args.config.fsx_path if args.config.on_lustre else None,
                catalog_endpoint=args.catalog_endpoint, catalog_region=args.catalog_region,
                max_drop_percent=args.max_drop_percent, published_count_parameter=counts.name,
                references=pulumi.Output.concat("s3://", args.references_bucket, "/sets"))),
            logging_config=aws.lambda_.FunctionLoggingConfigArgs(log_format="JSON", log_group=function_logs.name),
            tracing_config=aws.lambda_.FunctionTracingConfigArgs(mode="Active"),
            opts=self._child)
        return role, function

    def _workflow(self, name: str, function: aws.lambda_.Function) -> aws.sfn.StateMachine:
        """The state machine that runs the sync's steps (workflow_definition), with its role and logs."""
        args, region = self._args, self._args.config.region
        workflow_logs = self._log_group("workflow", args.naming.log_group(region, "catalog-sync", "workflow"))
        workflow_role = self._role("workflow", "states.amazonaws.com", function.arn.apply(lambda arn: [
            {"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": [arn, f"{arn}:*"]},
            # Step Functions log delivery is configured through these account-level calls: no resource scoping.
            {"Sid": "LogDeliveryHasNoResourceScoping", "Effect": "Allow", "Action": [
                "logs:CreateLogDelivery", "logs:GetLogDelivery", "logs:UpdateLogDelivery", "logs:DeleteLogDelivery",
                "logs:ListLogDeliveries", "logs:PutResourcePolicy", "logs:DescribeResourcePolicies",
                "logs:DescribeLogGroups"], "Resource": "*"},
            {"Effect": "Allow", "Action": ["xray:PutTraceSegments", "xray:PutTelemetryRecords"], "Resource": "*",
             "Sid": "XRayHasNoResourceScoping"}]))
        machine = aws.sfn.StateMachine(
            f"{name}-workflow", type="STANDARD", role_arn=workflow_role.arn,
            definition=function.arn.apply(lambda arn: json.dumps(workflow_definition(
                arn, import_metadata=args.config.on_lustre))),
            logging_configuration=aws.sfn.StateMachineLoggingConfigurationArgs(
                level="ERROR", include_execution_data=True,
                log_destination=workflow_logs.arn.apply(lambda arn: f"{arn}:*")),
            tracing_configuration=aws.sfn.StateMachineTracingConfigurationArgs(enabled=True),
            opts=self._child)
        return machine

    def _schedules(self, name: str, machine: aws.sfn.StateMachine, account: pulumi.Output[str]) -> aws.sqs.Queue:
        """The nightly schedule and the first sync at deploy, with their role and dead-letter queue."""
        args, region = self._args, self._args.config.region
        dead_letters = aws.sqs.Queue(f"{name}-dead-letters", kms_master_key_id=args.key_arn,
                                     message_retention_seconds=14 * 24 * 3600, opts=self._child)
        self._tls_only_queue(dead_letters)
        scheduler_role = self._role("scheduler", "scheduler.amazonaws.com", pulumi.Output.all(
            machine.arn, dead_letters.arn, args.key_arn).apply(lambda v: [
                {"Effect": "Allow", "Action": "states:StartExecution", "Resource": v[0]},
                {"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": v[1]},
                {"Effect": "Allow", "Action": ["kms:GenerateDataKey", "kms:Decrypt"], "Resource": v[2]}]),
            account=account)
        # Both schedules run the same workflow with the same role, retries and dead letters.
        target = aws.scheduler.ScheduleTargetArgs(
            arn=machine.arn, role_arn=scheduler_role.arn, input=json.dumps({"region": region}),
            retry_policy=aws.scheduler.ScheduleTargetRetryPolicyArgs(
                maximum_retry_attempts=SCHEDULE_RETRIES, maximum_event_age_in_seconds=SCHEDULE_MAX_AGE_SECONDS),
            dead_letter_config=aws.scheduler.ScheduleTargetDeadLetterConfigArgs(arn=dead_letters.arn))
        on_time = aws.scheduler.ScheduleFlexibleTimeWindowArgs(mode="OFF")
        aws.scheduler.Schedule(
            f"{name}-schedule", schedule_expression=args.schedule, schedule_expression_timezone="UTC",
            description=f"Nightly catalog sync of {region}", flexible_time_window=on_time, target=target,
            opts=self._child)
        # The first sync at deploy, so that the catalog is not empty until the first nightly run; again whenever
        # the data repository association is replaced (its id is in the description). Later `pulumi up`s leave
        # the time be.
        aws.scheduler.Schedule(
            f"{name}-first-sync", schedule_expression=pulumi.Output.all(machine.arn, args.association_id).apply(
                first_sync_expression),
            schedule_expression_timezone="UTC", action_after_completion="NONE",
            description=pulumi.Output.concat(f"First catalog sync of {region} for association ", args.association_id)
            if args.config.on_lustre else f"First catalog sync of {region} for {args.config.dataset.uri}",
            flexible_time_window=on_time, target=target,
            opts=self._opts(ignore_changes=["scheduleExpression"], replace_on_changes=["description"]))
        return dead_letters

    def _alarms(self, name: str, machine: aws.sfn.StateMachine, dead_letters: aws.sqs.Queue) -> aws.sns.Topic:
        """Alarms on a failed, timed-out or aborted run and on a run that could not start, to one topic."""
        args, region = self._args, self._args.config.region
        topic = aws.sns.Topic(f"{name}-alarms", kms_master_key_id=args.key_arn, opts=self._child)
        self._tls_only_topic(topic)
        for metric in ("ExecutionsFailed", "ExecutionsTimedOut", "ExecutionsAborted"):
            aws.cloudwatch.MetricAlarm(
                f"{name}-{metric.lower()}", namespace="AWS/States", metric_name=metric, statistic="Sum",
                dimensions={"StateMachineArn": machine.arn}, period=300, evaluation_periods=1, threshold=1,
                comparison_operator="GreaterThanOrEqualToThreshold", treat_missing_data="notBreaching",
                alarm_description=f"The nightly catalog sync of {region}: {metric}; the previous catalog is serving",
                alarm_actions=[topic.arn], opts=self._child)
        aws.cloudwatch.MetricAlarm(
            f"{name}-undelivered", namespace="AWS/SQS", metric_name="ApproximateNumberOfMessagesVisible",
            statistic="Maximum", dimensions={"QueueName": dead_letters.name}, period=300, evaluation_periods=1,
            threshold=1, comparison_operator="GreaterThanOrEqualToThreshold", treat_missing_data="notBreaching",
            alarm_description=f"The nightly catalog sync of {region} could not be started", alarm_actions=[topic.arn],
            opts=self._child)
        return topic

    def _function_statements(self, log_group_arn: str, file_system_arn: str | None, catalog_arn: str, account: str,
                             counts_arn: str, references_arn: str, key_arn: str,
                             catalog_key_arn: str | None) -> list[dict[str, Any]]:
        dataset, region = self._args.config.dataset, self._args.config.region
        listing: dict[str, Any] = {"Effect": "Allow", "Action": "s3:ListBucket",
                                   "Resource": f"arn:aws:s3:::{dataset.bucket}"}
        if dataset.prefix:
            listing["Condition"] = {"StringLike": {"s3:prefix": [dataset.prefix, f"{dataset.prefix}/*"]}}
        objects = f"arn:aws:s3:::{dataset.bucket}/{dataset.prefix + '/' if dataset.prefix else ''}*"
        imports: list[dict[str, Any]] = [
            {"Effect": "Allow", "Action": "fsx:CreateDataRepositoryTask",
             "Resource": [file_system_arn, f"arn:aws:fsx:{region}:{account}:task/*"]},
            # AWS authorises DescribeDataRepositoryTasks against "*" only (no resource types, no condition keys):
            # granted on the file system's ARN it is denied, and the nightly poll would fail.
            {"Sid": "DescribeTasksHasNoResourceScoping", "Effect": "Allow",
             "Action": "fsx:DescribeDataRepositoryTasks", "Resource": "*"},
        ] if file_system_arn else []
        return [
            {"Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
             "Resource": f"{log_group_arn}:*"},
            *imports,
            listing,
            *(catalog_writer_statements(catalog_arn, region) if self._args.catalog_kind == "opensearch" else
              s3_catalog_writer_statements(catalog_arn, str(catalog_key_arn), region)),
            {"Effect": "Allow", "Action": ["ssm:GetParameter", "ssm:PutParameter"], "Resource": counts_arn},
            # The collections' reference sets: each netCDF file's metadata read (ranged GETs), pieces written and
            # read back, sets written, in the region's own bucket under its key.
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": objects},
            {"Effect": "Allow", "Action": ["s3:PutObject", "s3:GetObject"], "Resource": f"{references_arn}/*"},
            {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": references_arn},
            {"Effect": "Allow", "Action": ["kms:GenerateDataKey", "kms:Decrypt"], "Resource": key_arn},
            *lambda_in_vpc_statements(),
        ]

    def _log_group(self, purpose: str, name: str) -> aws.cloudwatch.LogGroup:
        return aws.cloudwatch.LogGroup(f"{self._name}-{purpose}-log", name=name,
                                       retention_in_days=self._args.log_retention_days, opts=self._child)

    def _tls_only_queue(self, queue: aws.sqs.Queue) -> None:
        aws.sqs.QueuePolicy(f"{self._name}-dead-letters-tls", queue_url=queue.url, policy=queue.arn.apply(
            lambda arn: json.dumps({"Version": "2012-10-17", "Statement": [{
                "Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": {"AWS": "*"}, "Action": "sqs:*",
                "Resource": arn, "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]})), opts=self._child)

    def _tls_only_topic(self, topic: aws.sns.Topic) -> None:
        aws.sns.TopicPolicy(f"{self._name}-alarms-tls", arn=topic.arn, policy=topic.arn.apply(
            lambda arn: json.dumps({"Version": "2012-10-17", "Statement": [
                {"Sid": "AlarmsPublish", "Effect": "Allow", "Principal": {"Service": "cloudwatch.amazonaws.com"},
                 "Action": "sns:Publish", "Resource": arn},
                {"Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": {"AWS": "*"}, "Action": "sns:Publish",
                 "Resource": arn, "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]})), opts=self._child)
