"""One API budget per division shared by every worker (issue 11): see docs/budget.md."""
