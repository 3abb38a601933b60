"""The local cluster's own bookkeeping (scripts/localkube), apart from running it."""

import pytest
from localkube.node import unwanted_images

pytestmark = pytest.mark.pure

# `ctr images ls` as containerd 1.6 prints it, its columns narrowed: this build's images, the CRI plugin's id for
# each image it has seen, and an earlier build's controller with its id.
M = "application/vnd.oci.image.manifest.v1+json"
LISTING = f"""\
REF                                TYPE DIGEST     SIZE      PLATFORMS   LABELS
localhost/cifar-hpo-controller:new {M} sha256:aaa 300.0 MiB linux/amd64 io.cri-containerd.image=managed
localhost/cifar-hpo-controller:old {M} sha256:bbb 300.0 MiB linux/amd64 io.cri-containerd.image=managed
registry.k8s.io/pause:3.10.1       {M} sha256:ccc 300.0 KiB linux/amd64 io.cri-containerd.image=managed
sha256:1111                        {M} sha256:aaa 300.0 MiB linux/amd64 io.cri-containerd.image=managed
sha256:2222                        {M} sha256:bbb 300.0 MiB linux/amd64 io.cri-containerd.image=managed
sha256:3333                        {M} sha256:ccc 300.0 KiB linux/amd64 io.cri-containerd.image=managed
"""


def test_a_nodes_start_removes_every_image_but_this_builds_and_their_ids():
    wanted = {"localhost/cifar-hpo-controller:new", "registry.k8s.io/pause:3.10.1", "localhost/cifar-hpo-trainer:new"}
    assert unwanted_images(LISTING, wanted) == ["localhost/cifar-hpo-controller:old", "sha256:2222"]
    # An empty cache, or one holding only this build: nothing to remove.
    assert unwanted_images(LISTING.splitlines()[0], wanted) == []
    assert unwanted_images(LISTING, {"localhost/cifar-hpo-controller:new", "localhost/cifar-hpo-controller:old",
                                     "registry.k8s.io/pause:3.10.1"}) == []
