"""URIs as they may be shown: no user, no password, no secret query parameter values."""

from __future__ import annotations

import pytest

from poolwatch.addresses import without_credentials


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("qemu+ssh://root:s3cret@kvm02/system", "qemu+ssh://kvm02/system"),
        ("qemu:///system", "qemu:///system"),
        ("test:///default", "test:///default"),
        ("test:///tmp/a@b/host.xml", "test:///tmp/a@b/host.xml"),  # an @ in the path stays
        (
            "qemu+ssh://kvm02/system?password=hunter3&socket=/run/s&no_verify=1",
            "qemu+ssh://kvm02/system?password=<secret>&socket=/run/s&no_verify=1",
        ),
        (
            "qemu+tls://u:p@kvm02:16514/system?passwd=a&pass=b&key=c&token=d&secret=e&auth=f",
            "qemu+tls://kvm02:16514/system?passwd=<secret>&pass=<secret>&key=<secret>"
            "&token=<secret>&secret=<secret>&auth=<secret>",
        ),
        # Parts of a name count (api_key, access_token), case and %-encoding do not hide one;
        # keyfile (a path) and sshauth (a list of methods) are no secrets.
        (
            "qemu+ssh://h/system?API_KEY=a&access-token=b&pass%77ord=c&keyfile=/k&sshauth=agent",
            "qemu+ssh://h/system?API_KEY=<secret>&access-token=<secret>&pass%77ord=<secret>"
            "&keyfile=/k&sshauth=agent",
        ),
        ("qemu:///system?password=a%26b#top", "qemu:///system?password=<secret>#top"),
        ("qemu:///system?password", "qemu:///system?password"),  # no value, nothing to hide
    ],
)
def test_uris_are_shown_without_secrets(uri: str, shown: str) -> None:
    assert without_credentials(uri) == shown
