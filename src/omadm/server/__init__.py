"""The DM server: DM endpoint, device registry, SCOMO jobs, artifacts (issue 5)."""
