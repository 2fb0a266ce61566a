"""Behavioural fixtures of the public registries, each fronting a real local distribution registry.

Where a public service cannot run here (Docker Hub's web API and token login, Artifact Registry's listing,
registry.k8s.io's redirecting front, quay's and GitHub's APIs), a small aiohttp app reproduces its documented
behaviour, limits and error bodies (each module cites its sources) while manifests and blobs stay real.
"""
