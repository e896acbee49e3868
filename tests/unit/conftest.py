"""Make `ansible_collections.hosting.migration` importable from a plain checkout.

collections/ansible_collections/hosting/migration links back to the repository root, so putting collections/ on
sys.path is all an import needs. Under ansible-test the collection already sits in a real ansible_collections
tree and nothing is added.
"""

import sys
from pathlib import Path

_COLLECTIONS = Path(__file__).resolve().parents[2] / "collections"

if _COLLECTIONS.is_dir() and str(_COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(_COLLECTIONS))
