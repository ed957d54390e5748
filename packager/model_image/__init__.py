"""The base model as an OCI image (`packager package-base`): files under /models, a layer per weight file."""
