#!/usr/bin/env bash
# A device call sends the checkout's tracked files, and the test fixtures alone are about 180 MB (the limit is 64 MiB
# with the carried .dev/). `enter` checks out a throwaway branch without models/ and the fixtures (full-size/ stays:
# check-full-size reads it); `leave` goes back to the branch you were on and deletes it, which restores every file.
# Usage: tools/gpu/small-tree.sh enter|leave   (enter needs a clean working tree)
set -euo pipefail
cd "$(dirname "$0")/../.."
branch=device-run-tree
case ${1:-} in
  enter)
    [ -z "$(git status --porcelain)" ] || { echo "commit or stash first: the working tree is not clean" >&2; exit 1; }
    git rev-parse --abbrev-ref HEAD > .git/device-run-from
    git checkout -q -b "$branch"
    git rm -q -r --cached models tests/DiffusersSharp.Tests/Fixtures
    git add tests/DiffusersSharp.Tests/Fixtures/full-size
    git commit -q -m "device run: the tree without fixtures (tools/gpu/small-tree.sh)"
    rm -rf models
    find tests/DiffusersSharp.Tests/Fixtures -mindepth 1 -maxdepth 1 ! -name full-size -exec rm -rf {} +
    echo "tracked: $(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1) bytes; .dev: $(du -sb .dev 2>/dev/null | cut -f1) bytes (64 MiB = 67108864 together)"
    ;;
  leave)
    git checkout -q "$(cat .git/device-run-from)"
    git branch -q -D "$branch"
    rm -f .git/device-run-from
    git status --short | head -5
    ;;
  *) echo "usage: small-tree.sh enter|leave" >&2; exit 2 ;;
esac
