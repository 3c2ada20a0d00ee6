#!/usr/bin/python
"""Cut a `docker save` archive down to the layers a host does not have yet."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import tempfile

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: app_service_delta_archive
short_description: Write a copy of an image archive without the layers a host already holds
description:
  - Reads the manifest and image config of a C(docker save) archive of one image and writes a
    copy without the layer files whose layer chain the host already has (given as the layer
    lists, C(RootFS.Layers), of the images on the host).
  - C(docker load) only reads a layer's file when the engine lacks that layer chain, so the
    copy loads into that host like the whole archive. A new version of the same image usually
    differs in its top layer only (the application code), so the copy is a few hundred kB
    instead of the whole image.
  - Runs on the control node. The copy's name holds a hash of the image and of the layers
    left out; an existing copy is reused.
options:
  src:
    description: Archive written by C(docker save) (one image).
    type: path
    required: true
  dest_dir:
    description: Directory the copy is written to.
    type: path
    required: true
  host_layers:
    description: For each image on the host, its C(RootFS.Layers) (diff IDs, bottom first).
    type: list
    elements: list
    default: []
author: sprintpoints
"""

EXAMPLES = r"""
- name: Cut the archive down to what the host lacks
  app_service_delta_archive:
    src: ~/.cache/sprintpoints/images/sprintpoints-1.4.2.tar
    dest_dir: ~/.cache/sprintpoints/images
    host_layers: "{{ host_images.images | map(attribute='RootFS.Layers') }}"
  delegate_to: localhost
"""

RETURN = r"""
path:
  description: The archive to copy to the host (C(src) itself when no layer can be left out).
  type: str
  returned: always
layers_left_out:
  description: How many of the image's layers the copy leaves out.
  type: int
  returned: always
size:
  description: Size of the archive to copy, in bytes (0 in check mode when it is not written yet).
  type: int
  returned: always
"""


def read_manifest(archive: tarfile.TarFile) -> tuple[list[str], list[str], str]:
    """The layer file paths and diff IDs (bottom first) of the archive's one image, and the
    name of its config file (named after the config's digest: the image ID)."""
    manifest = json.load(archive.extractfile("manifest.json"))
    if len(manifest) != 1:
        raise ValueError(f"expected an archive of one image, found {len(manifest)}")
    config = json.load(archive.extractfile(manifest[0]["Config"]))
    paths, diff_ids = manifest[0]["Layers"], config["rootfs"]["diff_ids"]
    if len(paths) != len(diff_ids):
        raise ValueError(
            "the manifest and the image config list different numbers of layers"
        )
    return paths, diff_ids, manifest[0]["Config"]


def delta_name(stem: str, config: str, diff_ids: list[str], leave_out: set[str]) -> str:
    """The cached copy's file name: the same image (config, so its ID, and layers) cut for the
    same layers is the same file; an image whose config alone changed (a new HEALTHCHECK, ENV
    or CMD under the same tag: no new layer) is another one."""
    digest = hashlib.sha256(
        json.dumps([config, diff_ids, sorted(leave_out)]).encode()
    ).hexdigest()
    return f"{stem}.delta-{digest[:16]}.tar"


def present_paths(
    paths: list[str], diff_ids: list[str], host_layers: list[list[str]]
) -> set[str]:
    """Layer files the host does not need: the chain up to that layer exists there."""
    chains = {
        tuple(layers[: i + 1]) for layers in host_layers for i in range(len(layers))
    }
    return {path for i, path in enumerate(paths) if tuple(diff_ids[: i + 1]) in chains}


def write_copy(src: tarfile.TarFile, dest: str, leave_out: set[str]) -> None:
    """Copy every member but ``leave_out``, atomically (hosts may ask for the same copy at once)."""
    handle, tmp = tempfile.mkstemp(dir=os.path.dirname(dest), suffix=".part")
    try:
        with os.fdopen(handle, "wb") as raw, tarfile.open(fileobj=raw, mode="w") as out:
            for member in src.getmembers():
                if member.name in leave_out:
                    continue
                out.addfile(
                    member, src.extractfile(member) if member.isfile() else None
                )
        os.replace(tmp, dest)
    except BaseException:
        os.unlink(tmp)
        raise


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "src": {"type": "path", "required": True},
            "dest_dir": {"type": "path", "required": True},
            "host_layers": {"type": "list", "elements": "list", "default": []},
        },
        supports_check_mode=True,
    )
    src, dest_dir = module.params["src"], module.params["dest_dir"]
    try:
        with tarfile.open(src) as archive:
            paths, diff_ids, config = read_manifest(archive)
            leave_out = present_paths(paths, diff_ids, module.params["host_layers"])
            result = {"changed": False, "layers_left_out": len(leave_out)}
            if not leave_out:
                module.exit_json(path=src, size=os.path.getsize(src), **result)
            stem = os.path.basename(src).removesuffix(".tar")
            dest = os.path.join(dest_dir, delta_name(stem, config, diff_ids, leave_out))
            if not os.path.exists(dest):
                result["changed"] = True
                if not module.check_mode:
                    write_copy(archive, dest, leave_out)
    except (OSError, KeyError, ValueError, tarfile.TarError) as exc:
        module.fail_json(msg=f"cannot cut {src} down: {exc}")
    size = os.path.getsize(dest) if os.path.exists(dest) else 0
    module.exit_json(path=dest, size=size, **result)


if __name__ == "__main__":
    main()
