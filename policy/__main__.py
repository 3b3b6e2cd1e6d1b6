"""The policy pack, as the Pulumi CLI runs it (`pulumi preview --policy-pack policy`): this starts a policy
server and blocks, so nothing else imports this module; the policies live in policy/rules.py."""

from pulumi_policy import PolicyPack

from policy.rules import POLICIES

PolicyPack(name="cross-region-dask", policies=POLICIES)
