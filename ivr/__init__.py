"""Call flows written as plain async code over a call session (issue 3)."""
