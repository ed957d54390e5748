"""Manifests beside the image: compose, Kubernetes and KServe, rendered from the plan."""
