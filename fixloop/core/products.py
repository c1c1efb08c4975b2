"""The endoflife.date products fixloop knows, in one table: each product's id (endoflife.date/docs/api:
``/api/<product>.json``) and label, and the two keys it is found by:

* a scanner's OS family (``fixloop.core.change.locate.scanned_os``: Trivy's ``alma``, Grype's ``redhat``), for the
  end of life of a scanned image's OS line at triage (``fixloop.core.lifecycle``, ``OS_PRODUCTS``);
* an image's last path segment (``python``, ``rockylinux``), for the release lines an image reference names: a
  merge request's ``### Lifecycle`` (``fixloop.core.change.facts``, ``IMAGE_PRODUCTS``) and the runtime line of a
  scanned image at triage (``RUNTIMES``).

Pure data.
"""

from __future__ import annotations

# endoflife.date product id -> label (shown as it is: ``Node.js 12``, ``CentOS Stream 9``).
LABELS: dict[str, str] = {
    "alpine": "Alpine",
    "debian": "Debian",
    "ubuntu": "Ubuntu",
    "centos": "CentOS",
    "centos-stream": "CentOS Stream",
    "almalinux": "AlmaLinux",
    "rocky-linux": "Rocky Linux",
    "amazon-linux": "Amazon Linux",
    "oracle-linux": "Oracle Linux",
    "rhel": "RHEL",
    "fedora": "Fedora",
    "opensuse": "openSUSE Leap",
    "python": "Python",
    "nodejs": "Node.js",
    "go": "Go",
    "ruby": "Ruby",
    "php": "PHP",
    "eclipse-temurin": "Eclipse Temurin",
    "nginx": "nginx",
    "redis": "Redis",
    "postgresql": "PostgreSQL",
    "mysql": "MySQL",
    "mongodb": "MongoDB",
    "rabbitmq": "RabbitMQ",
}
# A scanner's OS family -> product id.
OS_FAMILIES: dict[str, str] = {
    "alpine": "alpine",
    "debian": "debian",
    "ubuntu": "ubuntu",
    "centos": "centos",
    "alma": "almalinux",
    "almalinux": "almalinux",
    "rocky": "rocky-linux",
    "amazon": "amazon-linux",
    "oracle": "oracle-linux",
    "redhat": "rhel",
    "fedora": "fedora",
    "opensuse-leap": "opensuse",
}
# An image's last path segment -> product id.
IMAGES: dict[str, str] = {
    "alpine": "alpine",
    "debian": "debian",
    "ubuntu": "ubuntu",
    "centos": "centos",
    "rockylinux": "rocky-linux",
    "almalinux": "almalinux",
    "amazonlinux": "amazon-linux",
    "fedora": "fedora",
    "python": "python",
    "node": "nodejs",
    "golang": "go",
    "ruby": "ruby",
    "php": "php",
    "eclipse-temurin": "eclipse-temurin",
    "nginx": "nginx",
    "redis": "redis",
    "postgres": "postgresql",
    "mysql": "mysql",
    "mongo": "mongodb",
    "rabbitmq": "rabbitmq",
}
# The language runtimes whose line a scanned image's reference names (``python:3.7.10-slim``) is checked at triage
# (``fixloop.core.lifecycle.runtime_line``): an ended one is a migration, like an ended OS line.
RUNTIMES: frozenset[str] = frozenset({"python", "nodejs", "ruby"})
# A runtime product -> the official image of that runtime (``nodejs`` -> ``node``): the FROM lines a migration moves.
RUNTIME_IMAGES: dict[str, str] = {p: name for name, p in IMAGES.items() if p in RUNTIMES}

# (product id, label) by each key, as the two readers use them.
OS_PRODUCTS: dict[str, tuple[str, str]] = {family: (p, LABELS[p]) for family, p in OS_FAMILIES.items()}
IMAGE_PRODUCTS: dict[str, tuple[str, str]] = {name: (p, LABELS[p]) for name, p in IMAGES.items()}
