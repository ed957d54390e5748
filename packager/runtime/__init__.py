"""The HTTP server that runs inside the packaged image (standalone: stdlib, torch, transformers, peft, fastapi).

In the image this package is copied to /opt/packager/packager_runtime/ and started with
`python3 -m packager_runtime.server --config /opt/packager/runtime.json`; keep imports relative.
"""
