"""Tests of omadm.package: manifest, build, signing, verification, CLI, examples."""
