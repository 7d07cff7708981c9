"""Command-line entry points: outbound-gate check | worker | demo."""
