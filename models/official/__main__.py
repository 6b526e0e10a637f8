"""``python -m models.official``: which official fixture components the project covers."""
from models.official import coverage, fixtures_root

if __name__ == "__main__":
    root = fixtures_root()
    covered, missing = coverage(root)
    print(f"fixtures: {root}")
    print(f"covered ({len(covered)}): " + ", ".join(covered))
    print(f"not covered yet ({len(missing)}): " + ", ".join(missing))
