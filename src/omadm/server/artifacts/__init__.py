"""Package files for devices: storage, upload checks, signed download links, DDs, routes.

Issue 5 item 7. Package bytes for URL delivery never pass through the DM endpoint: the DM
session hands the device a signed, per-device, expiring ``PkgURL`` (:mod:`.urls`), and the
device fetches it from :func:`artifact_routes` (HTTP Range, resumable), or first fetches a
DLOTA download descriptor (:mod:`.dd`) naming it. :mod:`.service` accepts uploads (each is
verified with the device's own package verifier) and :mod:`.storage` keeps the bytes,
content-addressed, in a local directory or any store implementing :class:`ArtifactStorage`:
:mod:`.s3` keeps them in an S3-compatible bucket and devices download with presigned URLs
(:mod:`.backends` picks the store from ``[artifacts]``).
"""

from __future__ import annotations

from .dd import DD_CONTENT_TYPE, InstallNotifyError, build_descriptor, parse_install_notify
from .routes import InstallNotifyHook, artifact_routes, parse_range
from .service import (
    PACKAGE_CONTENT_TYPE,
    ArtifactError,
    ReferenceCheck,
    add_artifact,
    delete_artifact,
    get_artifact,
    list_artifacts,
)
from .storage import ArtifactStorage, ArtifactStoreError, BlobNotFound, LocalArtifactStorage, StoredBlob
from .urls import (
    BadSignature,
    DescriptorGrant,
    LinkError,
    LinkExpired,
    descriptor_url,
    download_url,
    notify_url,
    verify_descriptor,
    verify_download,
    verify_notify,
)

__all__ = [
    "DD_CONTENT_TYPE",
    "PACKAGE_CONTENT_TYPE",
    "ArtifactError",
    "ArtifactStorage",
    "ArtifactStoreError",
    "BadSignature",
    "BlobNotFound",
    "DescriptorGrant",
    "InstallNotifyError",
    "InstallNotifyHook",
    "LinkError",
    "LinkExpired",
    "LocalArtifactStorage",
    "ReferenceCheck",
    "StoredBlob",
    "add_artifact",
    "artifact_routes",
    "build_descriptor",
    "delete_artifact",
    "descriptor_url",
    "download_url",
    "get_artifact",
    "list_artifacts",
    "notify_url",
    "parse_install_notify",
    "parse_range",
    "verify_descriptor",
    "verify_download",
    "verify_notify",
]
