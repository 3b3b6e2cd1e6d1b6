"""`python -m plan --stack <stack>`: the offline review of a stack (plan/__init__.py)."""

from plan import main

raise SystemExit(main())
