"""omadm: OMA Device Management 1.2 with the Software Component Management Object (SCOMO)."""

__version__ = "0.1.0"
