"""The local cluster's own bookkeeping (scripts/localkube), apart from running it."""

import pytest
from localkube.node import unwanted_images

pytestmark = pytest.mark.pure

# `ctr images ls` as containerd 1.6 prints it, trimmed: this build's images, the CRI plugin's id for each image it
# has seen, and an earlier build's controller with its id.
LISTING = """\
REF                                               TYPE                                       DIGEST          SIZE      PLATFORMS   LABELS
localhost/cifar-hpo-controller:new                application/vnd.oci.image.manifest.v1+json sha256:aaa      300.0 MiB linux/amd64 io.cri-containerd.image=managed
localhost/cifar-hpo-controller:old                application/vnd.oci.image.manifest.v1+json sha256:bbb      300.0 MiB linux/amd64 io.cri-containerd.image=managed
registry.k8s.io/pause:3.10.1                      application/vnd.oci.image.manifest.v1+json sha256:ccc      300.0 KiB linux/amd64 io.cri-containerd.image=managed
sha256:1111                                       application/vnd.oci.image.manifest.v1+json sha256:aaa      300.0 MiB linux/amd64 io.cri-containerd.image=managed
sha256:2222                                       application/vnd.oci.image.manifest.v1+json sha256:bbb      300.0 MiB linux/amd64 io.cri-containerd.image=managed
sha256:3333                                       application/vnd.oci.image.manifest.v1+json sha256:ccc      300.0 KiB linux/amd64 io.cri-containerd.image=managed
"""


def test_a_nodes_start_removes_every_image_but_this_builds_and_their_ids():
    wanted = {"localhost/cifar-hpo-controller:new", "registry.k8s.io/pause:3.10.1", "localhost/cifar-hpo-trainer:new"}
    assert unwanted_images(LISTING, wanted) == ["localhost/cifar-hpo-controller:old", "sha256:2222"]
    # An empty cache, or one holding only this build: nothing to remove.
    assert unwanted_images(LISTING.splitlines()[0], wanted) == []
    assert unwanted_images(LISTING, {"localhost/cifar-hpo-controller:new", "localhost/cifar-hpo-controller:old",
                                     "registry.k8s.io/pause:3.10.1"}) == []
