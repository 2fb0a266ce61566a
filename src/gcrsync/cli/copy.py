"""`gcrsync copy SRC DST`: copy one image (all platforms by default), digests preserved."""

from __future__ import annotations

import logging

import click

from gcrsync.cli.common import ByteProgress, registry_client_for, run_async, stdout_line
from gcrsync.cli.settings import checked, credential_store, load_if_given, parse_creds, user_platforms
from gcrsync.cli.settings import transport_options as settings_transport
from gcrsync.engine.artifacts import ArtifactPolicy, copy_attached
from gcrsync.engine.blobcache import BlobLocations
from gcrsync.engine.blobs import BlobMover
from gcrsync.engine.copy import CopyOptions, copy_image
from gcrsync.engine.endpoints import open_store, ref_of
from gcrsync.engine.result import Attached
from gcrsync.errors import ConfigError, GcrsyncError, first_error
from gcrsync.reference import Reference, parse_location
from gcrsync.registry.credentials import Credential

log = logging.getLogger("gcrsync")


@click.command("copy")
@click.argument("source")
@click.argument("destination")
@click.option("--platform", "platforms", multiple=True, metavar="OS/ARCH[/VARIANT]",
              help="Copy only these platforms of a multi-arch image (repeatable); the index is rewritten.")
@click.option("-j", "--jobs", type=int, help="Blobs transferred at once. Default 4.")
@click.option("--timeout", type=float, help="Connect timeout in seconds (idle read: 6x). Default 10.")
@click.option("--proxy", default=None, help="HTTP(S) proxy URL for registry traffic.")
@click.option("--force", is_flag=True, help="Push even if the destination already has this digest.")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False),
              help="YAML config: its `registries:` section (credentials, insecure, rate limits) applies.")
@click.option("--src-creds", envvar="GCRSYNC_SRC_CREDS", help="USER:PASSWORD for the source registry "
              "(prefer the GCRSYNC_SRC_CREDS env var: arguments are visible to other processes).")
@click.option("--dest-creds", envvar="GCRSYNC_DEST_CREDS", help="USER:PASSWORD for the destination registry "
              "(prefer GCRSYNC_DEST_CREDS).")
@click.option("--referrers/--no-referrers", default=True, show_default=True,
              help="Also copy the signatures, attestations and SBOMs attached to the image.")
@run_async
async def copy_command(
    source: str, destination: str, platforms: tuple[str, ...], jobs: int | None, timeout: float | None,
    proxy: str | None, force: bool, config_path: str | None, src_creds: str | None, dest_creds: str | None,
    referrers: bool,
) -> None:
    """Copy one image from SOURCE to DESTINATION.

    Both are image references (`registry/repo:tag`, `repo@sha256:...`) or OCI layouts (`oci:PATH[:TAG]`).
    A destination without a tag takes the source's tag (or, copied by digest, is pushed by digest).

    \b
    Examples:
      gcrsync copy registry.k8s.io/pause:3.9 localhost:5000/mirror/pause:3.9
      gcrsync copy localhost:5000/app:v1 oci:./out:v1 --platform linux/amd64
      gcrsync copy ghcr.io/org/app:v2 localhost:5000/app:v2 --no-referrers
    """
    src_loc = parse_location(source)
    dst_loc = parse_location(destination)
    src_ref = ref_of(src_loc)
    # A destination without a tag takes the source's tag, or its digest: an image copied by digest is pushed
    # by digest, never under an invented `latest` that could overwrite someone's tag.
    if isinstance(dst_loc, Reference) and dst_loc.tag is None and dst_loc.digest is None:
        dst_ref = src_ref
    else:
        dst_ref = ref_of(dst_loc, src_ref)
    jobs = checked("--jobs", jobs, "jobs") or 4
    checked("--timeout", timeout, "timeout")
    wanted = user_platforms(platforms)
    if wanted and dst_ref.startswith("sha256:"):
        raise ConfigError("a --platform copy has a digest of its own: give DESTINATION a tag")
    config = load_if_given(config_path)  # none: no pydantic nor YAML to import
    overrides: dict[str, Credential] = {}
    for loc, text, what in ((src_loc, src_creds, "--src-creds"), (dst_loc, dest_creds, "--dest-creds")):
        cred = parse_creds(text, what)
        if cred is not None and isinstance(loc, Reference):
            overrides[loc.registry] = cred
    credentials = credential_store(config, overrides=overrides)
    async with registry_client_for(config, settings_transport(config, timeout=timeout, proxy=proxy),
                                   credentials) as client:
        src = open_store(client, src_loc, create=False)
        dst = open_store(client, dst_loc, create=True)
        with ByteProgress(f"{source} → {destination}") as progress:
            mover = BlobMover(jobs, on_bytes=progress.advance, locations=BlobLocations(), on_start=progress.add_total)
            try:
                result = await copy_image(src, src_ref, dst, dst_ref, mover, CopyOptions(wanted, force))
                attached: list[Attached] = []
                if referrers:
                    policy = ArtifactPolicy()
                    if config is not None:  # the config's `defaults.artifact_types:` narrows the referrers
                        types = config.defaults.artifact_types
                        policy = ArtifactPolicy(include=list(types.include), exclude=list(types.exclude))
                    attached = await copy_attached(src, dst, result.subjects, mover, policy)
            except BaseException as exc:  # TaskGroup wraps failures in groups: surface the first one
                inner = first_error(exc)
                if isinstance(inner, GcrsyncError):
                    raise inner from None
                raise
    note = _attached_note(attached)
    if result.state == "unchanged":
        stdout_line(f"unchanged {result.target} {result.digest}{note}")
        return
    extra = ""
    if result.digest != result.source_digest:
        extra = f" (filtered from {result.source_digest} to {', '.join(result.platforms)})"
    stdout_line(
        f"copied {result.source} → {result.target} {result.digest}{extra}: "
        f"{result.blobs_copied} blobs copied ({result.bytes_copied} bytes), {result.blobs_mounted} mounted, "
        f"{result.blobs_skipped} already present{note}"
    )


def _attached_note(attached: list[Attached]) -> str:
    if not attached:
        return ""
    copied = sum(1 for a in attached if a.copied)
    return f"; {len(attached)} attached artifacts ({copied} copied)"
