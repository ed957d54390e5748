"""Signing a pushed image and checking it back: a model signature (OpenSSF model-signing) over the served files,
the lock and the BOM; a cosign signature over the image manifest; both, the BOM and the lock attached to the
image as OCI referrers; `verify-image` fetches them back and checks each against the image's layers."""
