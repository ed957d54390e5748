"""Dockerfile and compose templates, installed as package data (see pyproject.toml)."""
