"""python -m stacklet.guest_images [tiny|cloud-init|all] [--force] [--print]: build the guest
images into the cache (scripts/build-images calls this)."""

from __future__ import annotations

import argparse
import sys

from stacklet.guest_images import BuildError, cache_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="build-images", description=__doc__)
    parser.add_argument("which", nargs="?", default="tiny", choices=("tiny", "cloud-init", "all"))
    parser.add_argument("--force", action="store_true", help="rebuild even when cached")
    args = parser.parse_args(argv)
    from stacklet.guest_images import cloudinit, tiny
    try:
        if args.which in ("tiny", "all"):
            print(tiny.build(force=args.force).kernel.parent)
        if args.which in ("cloud-init", "all"):
            print(cloudinit.build(force=args.force).disk.parent)
    except BuildError as exc:
        print(f"build-images: {exc}", file=sys.stderr)
        return 1
    print(f"build-images: cache {cache_dir()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
