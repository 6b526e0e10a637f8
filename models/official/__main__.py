"""``python -m models.official``: which official fixture components the project covers."""
import sys

from models.official import coverage, fixtures_root

if __name__ == "__main__":
    root = fixtures_root()
    if not root.is_dir():
        sys.exit(f"fixtures: {root} not found; set REPRO_OFFICIAL_FIXTURES to the folder "
                 "official/ of the shared fixtures (see its README)")
    covered, missing = coverage(root)
    print(f"fixtures: {root}")
    print(f"covered ({len(covered)}): " + ", ".join(covered))
    print(f"not covered yet ({len(missing)}): " + ", ".join(missing))
