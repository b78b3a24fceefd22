"""Every number DM 1.2 and SCOMO give a meaning to, as named enums with descriptions.

Use these names everywhere instead of bare numbers. ``describe(code)`` gives the text for
a code that may or may not be one of ours (peers send vendor codes too).
"""

from __future__ import annotations

from enum import IntEnum, StrEnum

__all__ = [
    "AlertCode",
    "AuthType",
    "GenericAlertMark",
    "ScomoResult",
    "StatusCode",
    "UiMode",
    "describe_status",
]


class StatusCode(IntEnum):
    """SyncML 1.2 response codes (DM RepPro; OMA DM 1.2 digest section 5)."""

    IN_PROGRESS = 101
    OK = 200
    ITEM_ADDED = 201
    ACCEPTED_FOR_PROCESSING = 202
    NON_AUTHORITATIVE_RESPONSE = 203
    NO_CONTENT = 204
    RESET_CONTENT = 205
    PARTIAL_CONTENT = 206
    CONFLICT_RESOLVED_WITH_MERGE = 207
    CONFLICT_RESOLVED_CLIENT_WINNING = 208
    CONFLICT_RESOLVED_WITH_DUPLICATE = 209
    DELETE_WITHOUT_ARCHIVE = 210
    ITEM_NOT_DELETED = 211
    AUTHENTICATION_ACCEPTED = 212
    CHUNKED_ITEM_ACCEPTED = 213
    OPERATION_CANCELLED = 214
    NOT_EXECUTED = 215
    ATOMIC_ROLL_BACK_OK = 216
    MULTIPLE_CHOICES = 300
    MOVED_PERMANENTLY = 301
    FOUND = 302
    SEE_OTHER = 303
    NOT_MODIFIED = 304
    USE_PROXY = 305
    BAD_REQUEST = 400
    INVALID_CREDENTIALS = 401
    PAYMENT_NEEDED = 402
    FORBIDDEN = 403
    NOT_FOUND = 404
    COMMAND_NOT_ALLOWED = 405
    OPTIONAL_FEATURE_NOT_SUPPORTED = 406
    MISSING_CREDENTIALS = 407
    REQUEST_TIMEOUT = 408
    CONFLICT = 409
    GONE = 410
    SIZE_REQUIRED = 411
    INCOMPLETE_COMMAND = 412
    REQUEST_ENTITY_TOO_LARGE = 413
    URI_TOO_LONG = 414
    UNSUPPORTED_MEDIA_TYPE = 415
    REQUESTED_SIZE_TOO_BIG = 416
    RETRY_LATER = 417
    ALREADY_EXISTS = 418
    CONFLICT_RESOLVED_SERVER_DATA = 419
    DEVICE_FULL = 420
    UNKNOWN_SEARCH_GRAMMAR = 421
    BAD_CGI_SCRIPT = 422
    SOFT_DELETE_CONFLICT = 423
    SIZE_MISMATCH = 424
    PERMISSION_DENIED = 425
    PARTIAL_ITEM_NOT_ACCEPTED = 426
    ITEM_NOT_EMPTY = 427
    MOVE_FAILED = 428
    COMMAND_FAILED = 500
    COMMAND_NOT_IMPLEMENTED = 501
    BAD_GATEWAY = 502
    SERVICE_UNAVAILABLE = 503
    GATEWAY_TIMEOUT = 504
    DTD_VERSION_NOT_SUPPORTED = 505
    PROCESSING_ERROR = 506
    ATOMIC_FAILED = 507
    REFRESH_REQUIRED = 508
    RESERVED_509 = 509
    DATA_STORE_FAILURE = 510
    SERVER_FAILURE = 511
    SYNCHRONIZATION_FAILED = 512
    PROTOCOL_VERSION_NOT_SUPPORTED = 513
    OPERATION_CANCELLED_BY_RECIPIENT = 514
    ATOMIC_ROLL_BACK_FAILED = 516
    ATOMIC_RESPONSE_TOO_LARGE = 517

    @property
    def description(self) -> str:
        return _STATUS_TEXT.get(self, self.name.replace("_", " ").capitalize())

    @property
    def is_success(self) -> bool:
        return 200 <= self < 300


_STATUS_TEXT: dict[int, str] = {
    101: "In progress",
    200: "OK",
    202: "Accepted for processing (the outcome follows later, e.g. in a Generic Alert)",
    212: "Authentication accepted for the rest of the session",
    213: "Chunked item accepted and buffered",
    214: "Operation cancelled (by the user); no more commands will be processed",
    215: "Not executed",
    216: "Atomic roll back OK",
    304: "Not modified (the user answered No)",
    400: "Bad request: malformed command or unknown element",
    401: "Invalid credentials",
    403: "Forbidden",
    404: "Not found",
    405: "Command not allowed on this target",
    406: "Optional feature not supported",
    407: "Missing credentials: authentication required",
    408: "Request timeout",
    412: "Incomplete command: mandatory parameters missing",
    413: "Request entity too large",
    414: "URI too long",
    415: "Unsupported media type or format",
    416: "Requested size too big",
    417: "Retry later",
    418: "Already exists",
    420: "Device full",
    424: "Size mismatch: reassembled object differs from the declared size",
    425: "Permission denied by the ACL",
    500: "Command failed",
    501: "Command not implemented",
    505: "DTD version not supported",
    506: "Processing error",
    507: "Atomic failed",
    510: "Data store failure",
    516: "Atomic roll back failed",
    517: "Atomic response too large to fit",
}


def describe_status(code: int) -> str:
    """Text for any status code, including application-specific and unknown ones."""
    try:
        return StatusCode(code).description
    except ValueError:
        if 1000 <= code <= 1599:
            return f"Application-specific status {code}"
        return f"Unknown status {code}"


class AlertCode(IntEnum):
    """DM alert codes (only codes >= 1100 are valid in DM; digest section 4)."""

    DISPLAY = 1100
    CONFIRM_OR_REJECT = 1101
    TEXT_INPUT = 1102
    SINGLE_CHOICE = 1103
    MULTIPLE_CHOICE = 1104
    SERVER_INITIATED_MGMT = 1200
    CLIENT_INITIATED_MGMT = 1201
    NEXT_MESSAGE = 1222
    SESSION_ABORT = 1223
    CLIENT_EVENT = 1224
    NO_END_OF_DATA = 1225
    GENERIC_ALERT = 1226

    @property
    def description(self) -> str:
        return _ALERT_TEXT[self]

    @property
    def is_user_interaction(self) -> bool:
        return 1100 <= self <= 1104


_ALERT_TEXT: dict[int, str] = {
    1100: "Display a text to the user",
    1101: "Ask the user to confirm or reject",
    1102: "Ask the user for text input",
    1103: "Ask the user for a single choice",
    1104: "Ask the user for multiple choices",
    1200: "Server-initiated management session (answering a Package #0)",
    1201: "Client-initiated management session",
    1222: "Next message: send the next message of your package",
    1223: "Session abort",
    1224: "Client event",
    1225: "No end of data: a chunked object was interrupted",
    1226: "Generic alert",
}


class ScomoResult(IntEnum):
    """SCOMO result codes carried in the Data of a Generic Alert (SCOMO digest section 5)."""

    SUCCESSFUL = 1200
    CLIENT_ERROR = 1400
    USER_CANCELLED = 1401
    DOWNLOAD_FAILED = 1402
    ALTERNATE_DOWNLOAD_AUTHENTICATION_FAILURE = 1403
    DOWNLOAD_FAILED_OUT_OF_MEMORY = 1404
    INSTALL_FAILED = 1405
    INSTALL_FAILED_OUT_OF_MEMORY = 1406
    FAILED_PACKAGE_VALIDATION = 1407
    REMOVE_FAILED = 1408
    ACTIVATE_FAILED = 1409
    DEACTIVATE_FAILED = 1410
    NOT_IMPLEMENTED = 1411
    UNDEFINED_ERROR = 1412
    UNSUPPORTED_ENVIRONMENT = 1413
    ALTERNATE_DOWNLOAD_SERVER_ERROR = 1500
    ALTERNATE_DOWNLOAD_SERVER_UNAVAILABLE = 1501

    @property
    def description(self) -> str:
        return _SCOMO_TEXT[self]

    @staticmethod
    def is_success_code(code: int) -> bool:
        """1200 and the vendor-specific success range 1250-1299."""
        return code == 1200 or 1250 <= code <= 1299


_SCOMO_TEXT: dict[int, str] = {
    1200: "Successful",
    1400: "Client error",
    1401: "User cancelled",
    1402: "Download failed",
    1403: "Alternate download authentication failure",
    1404: "Download failed: device out of memory",
    1405: "Install failed",
    1406: "Install failed: device out of memory",
    1407: "Failed package validation",
    1408: "Remove failed",
    1409: "Activate failed",
    1410: "Deactivate failed",
    1411: "Not implemented",
    1412: "Undefined error",
    1413: "Operation rejected: unsupported environment",
    1500: "Alternate download server error",
    1501: "Alternate download server unavailable",
}


class GenericAlertMark(StrEnum):
    """Severity in ``Meta/Mark`` of a Generic Alert (informational is the default)."""

    FATAL = "fatal"
    CRITICAL = "critical"
    MINOR = "minor"
    WARNING = "warning"
    INFORMATIONAL = "informational"
    HARMLESS = "harmless"
    INDETERMINATE = "indeterminate"


class AuthType(StrEnum):
    """``Meta/Type`` values of ``Cred`` and ``Chal``."""

    BASIC = "syncml:auth-basic"
    MD5 = "syncml:auth-md5"
    HMAC = "syncml:auth-MAC"
    X509 = "syncml:auth-X509"
    SECURID = "syncml:auth-securid"
    SAFEWORD = "syncml:auth-safeword"
    DIGIPASS = "syncml:auth-digipass"


class UiMode(IntEnum):
    """Package #0 ui-mode (a recommendation the client should follow)."""

    NOT_SPECIFIED = 0
    BACKGROUND = 1
    INFORMATIVE = 2
    USER_INTERACTION = 3
