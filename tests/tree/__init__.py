"""Tests of omadm.tree."""
