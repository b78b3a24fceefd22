"""The DM Account management object (``urn:oma:mo:oma-dm-dmacc:1.0``, ``./DMAcc``).

One account per DM server: how to reach it and how each side authenticates (digest 7.8;
OMA-TS-DM_StdObj-V1_2 7.1.3.1). DM 1.2 does not fix where DMAcc is mounted; ``./DMAcc`` is
the common choice (DM 1.1.2 used ``./SyncML/DMAcc``) and clients find it by its Type.

Access types. The standard's DDF gives the minimum, Get; like real clients we also let a
server manage its own account (the ACL, set at bootstrap, restricts each account to its
server): everything inside an account is Dynamic (created with the account, deleted with
it), can be Added and Replaced, and optional nodes can be Deleted. The two credentials
(AAuthSecret, AAuthData) never allow Get or Copy, whoever asks.

The MO root allows Get only, with the default ACL ``Get=*``: any server may list the
accounts, but none may Add one (accounts come from bootstrap, not from another server) and
each account's own ACL decides who reads inside it.
"""

from __future__ import annotations

from .model import Access, Format, MODef, NodeDef, Occurrence, Scope

__all__ = [
    "AAUTH_LEVELS",
    "AAUTH_TYPES",
    "ADDR_TYPES",
    "DMACC",
    "DMACC_URN",
]

DMACC_URN = "urn:oma:mo:oma-dm-dmacc:1.0"

#: AAuthLevel: whose credentials, for which layer.
AAUTH_LEVELS = ("CLCRED", "SRVCRED", "OBEX", "HTTP")
#: AAuthType: the authentication schemes an AppAuth entry can describe.
AAUTH_TYPES = (
    "HTTP-BASIC",
    "HTTP-DIGEST",
    "BASIC",
    "DIGEST",
    "HMAC",
    "X509",
    "SECURID",
    "SAFEWORD",
    "DIGIPASS",
    "TRANSPORT",
)
#: AddrType: how Addr is written.
ADDR_TYPES = ("URI", "IPv4", "IPv6")

_REQUIRED = Access.ADD | Access.GET | Access.REPLACE
"""A node an account must have: created with it, readable, changeable, not deletable alone."""
_FIXED = Access.ADD | Access.GET
"""A node set once, with its account: readable, never replaced."""
_OPTIONAL = _REQUIRED | Access.DELETE
"""A node an account may lack: it can also be deleted on its own."""
_SECRET = Access.ADD | Access.DELETE | Access.REPLACE
"""A credential: writable, never readable."""


def _node(
    name: str,
    description: str,
    *children: NodeDef,
    occurrence: Occurrence = Occurrence.ONE,
    title: str | None = None,
) -> NodeDef:
    access = _REQUIRED if occurrence.minimum == 1 and not name.startswith("<") else _OPTIONAL
    return NodeDef(
        name,
        Format.NODE,
        access,
        occurrence,
        Scope.DYNAMIC,
        description=description,
        title=title,
        children=children,
    )


def _leaf(
    name: str,
    description: str,
    *,
    optional: bool = False,
    values: tuple[str, ...] = (),
    default: str | None = None,
    access: Access | None = None,
) -> NodeDef:
    return NodeDef(
        name,
        Format.CHR,
        access if access is not None else _OPTIONAL if optional else _REQUIRED,
        Occurrence.ZERO_OR_ONE if optional else Occurrence.ONE,
        Scope.DYNAMIC,
        description=description,
        values=values,
        default=default,
    )


def _secret(name: str, fmt: Format, description: str, mime: str | None = None) -> NodeDef:
    return NodeDef(
        name,
        fmt,
        _SECRET,
        Occurrence.ZERO_OR_ONE,
        Scope.DYNAMIC,
        mime=mime,
        description=description,
        secret=True,
    )


_ACCOUNT = _node(
    "<X>",
    "One DM account: the settings the client uses to manage its sessions with one DM server.",
    _leaf(
        "AppID",
        "Application identifier of the DM account object (the w7 application characteristic).",
        values=("w7",),
        default="w7",
    ),
    _leaf(
        "ServerID",
        "Identifier of the DM server: the principal named in ACLs and the server identifier of "
        "Package #0 notifications. Set when the account is added, never replaced (DM 1.2 gives it "
        "Get only): a server that renamed its account would take another authority's rights.",
        access=_FIXED,
    ),
    _leaf("Name", "User-displayable name of the DM server.", optional=True),
    _leaf(
        "PrefConRef",
        "Reference to the preferred connectivity: the URI of a proxy or NAP management object, "
        "or an implementation-specific identifier.",
        optional=True,
    ),
    _node(
        "ToConRef",
        "Collection of connectivity references the client may use to reach the server.",
        _node(
            "<X>",
            "One connectivity reference.",
            _leaf(
                "ConRef",
                "Linkage to connectivity parameters: the URI of a management object or an "
                "implementation-specific identifier.",
            ),
            occurrence=Occurrence.ONE_OR_MORE,
            title="Connectivity reference",
        ),
        occurrence=Occurrence.ZERO_OR_ONE,
    ),
    _node(
        "AppAddr",
        "Addresses of the DM server.",
        _node(
            "<X>",
            "One address of the DM server.",
            _leaf("Addr", "Address of the DM server, written as AddrType says (a URL for URI)."),
            _leaf(
                "AddrType",
                "Type of Addr; URI when no value is given.",
                values=ADDR_TYPES,
                default="URI",
            ),
            _node(
                "Port",
                "Port numbers to use with this address.",
                _node(
                    "<X>",
                    "One port setting.",
                    _leaf(
                        "PortNbr",
                        "Port number: a decimal number that fits a 16-bit unsigned integer.",
                    ),
                    occurrence=Occurrence.ONE_OR_MORE,
                    title="Port",
                ),
                occurrence=Occurrence.ZERO_OR_ONE,
            ),
            occurrence=Occurrence.ONE_OR_MORE,
            title="Server address",
        ),
    ),
    _leaf(
        "AAuthPref",
        "Preferred authentication type (one of the AAuthType values, e.g. DIGEST): the client "
        "should use it when connecting, saving a challenge round trip. Empty: use the type "
        "negotiated in the previous session.",
        optional=True,
    ),
    _node(
        "AppAuth",
        "Authentication settings of the account.",
        _node(
            "<X>",
            "One set of credentials, for one authentication level.",
            _leaf(
                "AAuthLevel",
                "Whose credentials these are: CLCRED the client's to the server and SRVCRED the "
                "server's to the client (both at DM protocol level), OBEX and HTTP for those "
                "transports (then only HTTP-BASIC, HTTP-DIGEST and TRANSPORT apply).",
                values=AAUTH_LEVELS,
            ),
            _leaf(
                "AAuthType",
                "Authentication type: HTTP-BASIC and HTTP-DIGEST (RFC 2617), BASIC, DIGEST and "
                "HMAC (DM syncml:auth-basic, syncml:auth-md5, syncml:auth-MAC), X509, SECURID, "
                "SAFEWORD, DIGIPASS, or TRANSPORT (secure transport authentication).",
                values=AAUTH_TYPES,
            ),
            _leaf("AAuthName", "Authentication name (user or server name).", optional=True),
            _secret(
                "AAuthSecret",
                Format.CHR,
                "Authentication secret (password or shared key); never returned by Get.",
            ),
            _secret(
                "AAuthData",
                Format.BIN,
                "Authentication data for the AAuthType, e.g. the next nonce for DIGEST or HMAC; "
                "never returned by Get.",
                mime="application/octet-stream",
            ),
            occurrence=Occurrence.ONE_OR_MORE,
            title="Credentials",
        ),
    ),
    _node(
        "Ext",
        "Vendor-specific information about the DM application (application, device or OS "
        "vendor), usually under a vendor-named node; its structure is not defined here.",
        occurrence=Occurrence.ZERO_OR_ONE,
    ),
    occurrence=Occurrence.ONE_OR_MORE,
    title="DM account",
)

DMACC = MODef(
    name="DMAcc",
    urn=DMACC_URN,
    default_path="./DMAcc",
    default_acl="Get=*",
    root=NodeDef(
        "DMAcc",
        Format.NODE,
        Access.READ_ONLY,
        ddf_name=DMACC_URN,
        description="DM accounts: one interior node per DM server the client is managed by.",
        children=(_ACCOUNT,),
    ),
)
