"""The platform's security policy pack (see rules.py)."""
