"""Where things sit inside the image (one place, so the Dockerfile, runtime.json and the lock agree)."""

MODEL_DIR = "/models/merged"
BASE_MOUNT = "/base"
ADAPTERS_DIR = "/adapters"
RUNTIME_ROOT = "/opt/packager"
RUNTIME_PACKAGE = "packager_runtime"
LOCK_IN_IMAGE = f"{RUNTIME_ROOT}/packager.lock.json"
RUNTIME_JSON_IN_IMAGE = f"{RUNTIME_ROOT}/runtime.json"
# Files packager writes into the context and every layer the oci builder writes get this mtime, so their bytes
# are the same from one build to the next (and from one machine to another).
FIXED_MTIME = 315532800  # 1980-01-01
