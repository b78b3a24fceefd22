"""Tests of the device-side SCOMO plug-in."""
