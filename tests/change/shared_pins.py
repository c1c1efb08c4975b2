"""The seeded GitOps repository with packages pinned in several services (issue 22, the grouping policy), and the
real reports that scan it:

- ``services/catalog`` gets a package.json + package-lock.json (its admin UI) pinning ``jquery`` 3.3.9 (direct) and
  ``lodash`` 4.17.4 (transitive, dev), next to storefront's ``jquery`` 3.3.9 and ``lodash`` 4.17.13;
- ``services/legacy-api`` gets a requirements.txt pinning ``Django==3.2.9`` and ``Werkzeug==0.11``, as payments'.

The scans are real reports of tests/fixtures, each as a scan of the repository names the manifest it read
(``target``, the report's own target with the service's folder in front; nothing else changes):
trivy-head_npm (jquery 3.3.9) and dd-snyk_npm_1critical (lodash 4.17.13) of storefront's lockfile,
trivy-legacy-array_nodejs (jquery 3.3.9, lodash 4.17.4) of catalog's, trivy-0.22-fulldb_pip (Werkzeug 0.11) of
payments' requirements.txt only; pip-audit's legacy list (django 3.2.9, twisted 18.9.0, aiohttp 3.6.2) names no
file. So legacy-api's Werkzeug pin is in no scan: only a planner looking in every manifest finds it.
"""

from __future__ import annotations

from fixloop.core.models import Signal
from tests.change.helpers import SEED
from tests.conftest import signals

CATALOG_PACKAGE = """\
{
  "name": "catalog-admin",
  "version": "1.4.2",
  "private": true,
  "description": "The catalog's admin pages",
  "dependencies": {
    "jquery": "3.3.9"
  },
  "devDependencies": {
    "@babel/core": "7.8.3"
  }
}
"""

CATALOG_LOCK = """\
{
  "name": "catalog-admin",
  "version": "1.4.2",
  "lockfileVersion": 2,
  "requires": true,
  "packages": {
    "": {
      "name": "catalog-admin",
      "version": "1.4.2",
      "dependencies": {
        "jquery": "3.3.9"
      },
      "devDependencies": {
        "@babel/core": "7.8.3"
      }
    },
    "node_modules/@babel/core": {
      "version": "7.8.3",
      "resolved": "https://registry.npmjs.org/@babel/core/-/core-7.8.3.tgz",
      "dev": true,
      "dependencies": {
        "lodash": "^4.17.4"
      }
    },
    "node_modules/jquery": {
      "version": "3.3.9",
      "resolved": "https://registry.npmjs.org/jquery/-/jquery-3.3.9.tgz"
    },
    "node_modules/lodash": {
      "version": "4.17.4",
      "resolved": "https://registry.npmjs.org/lodash/-/lodash-4.17.4.tgz",
      "dev": true
    }
  },
  "dependencies": {
    "@babel/core": {
      "version": "7.8.3",
      "resolved": "https://registry.npmjs.org/@babel/core/-/core-7.8.3.tgz",
      "dev": true,
      "requires": {
        "lodash": "^4.17.4"
      }
    },
    "jquery": {
      "version": "3.3.9",
      "resolved": "https://registry.npmjs.org/jquery/-/jquery-3.3.9.tgz"
    },
    "lodash": {
      "version": "4.17.4",
      "resolved": "https://registry.npmjs.org/lodash/-/lodash-4.17.4.tgz",
      "dev": true
    }
  }
}
"""

LEGACY_REQUIREMENTS = """\
# legacy-api runtime dependencies (pinned; updated by merge request)
Django==3.2.9
Werkzeug==0.11
"""

ADDED = {
    "services/catalog/package.json": CATALOG_PACKAGE,
    "services/catalog/package-lock.json": CATALOG_LOCK,
    "services/legacy-api/requirements.txt": LEGACY_REQUIREMENTS,
}
SHARED = {**SEED, **ADDED}

REPORTS = (  # report, the folder of the manifest it scanned (None: it names none)
    ("trivy/trivy-head_npm.json", "services/storefront"),
    ("snyk/dd-snyk_npm_1critical.json", "services/storefront"),
    ("trivy/trivy-legacy-array_nodejs.json", "services/catalog"),
    ("trivy/trivy-0.22-fulldb_pip.json", "services/payments"),
    ("pip-audit/dd-pip-audit_legacy-list-format_many_vulns.json", None),
)


def scans() -> list[Signal]:
    """The signals of ``REPORTS``, each language finding's target in its scanned folder."""
    out: list[Signal] = []
    for report, folder in REPORTS:
        for s in signals(report):
            if folder is not None and s.target and s.ecosystem in ("npm", "pypi"):
                s = s.model_copy(update={"target": f"{folder}/{s.target}"})
            out.append(s)
    return out
