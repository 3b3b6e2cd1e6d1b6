"""The recorded resource graph: the real Pulumi program run under mocks (synth.py) and what is proven on the graph
it records: routes and security groups (reachability.py) and IAM (permissions.py). Used by
`python -m plan`, the policy pack and the tests; the components never import it."""
